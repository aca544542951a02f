//! A stand-in for the Kubernetes API server, just enough for ktrace's
//! watcher: HTTPS (its own CA, made with rcgen), bearer-token auth (401
//! without it), `GET /api/v1/{pods,services,nodes}` lists and
//! `?watch=true&resourceVersion=N` streams of JSON lines
//! (`{"type":"ADDED","object":…}`), `fieldSelector=spec.nodeName=X` for pods.
//! Tests can stop and restart it (same port, same objects), make it answer
//! 500, and make the next watches expire (410 Gone → the client relists).
//! Objects are the lab's (docs/lab.md), in `kubectl get -o json` shape.
//!
//! Loopback only; every wait is bounded.

#![allow(dead_code, reason = "each test binary uses part of the stand-in")]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
    sync::broadcast,
    task::JoinSet,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

/// The token the stand-in accepts.
pub(crate) const TOKEN: &str = "ktrace-test-token";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Pod,
    Service,
    Node,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Node => "nodes",
        }
    }
    fn list_kind(self) -> &'static str {
        match self {
            Kind::Pod => "PodList",
            Kind::Service => "ServiceList",
            Kind::Node => "NodeList",
        }
    }
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: Kind,
    ty: &'static str,
    obj: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<(Kind, String), Value>,
    log: Vec<Change>,
}

struct Shared {
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
    fail_500: AtomicBool,
    expire_watches: AtomicU32,
    requests: AtomicU32,
}

/// The stand-in server.
pub(crate) struct ApiServer {
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    pub(crate) addr: SocketAddr,
    running: Option<tokio::task::JoinHandle<()>>,
    pub(crate) dir: PathBuf,
}

fn key_of(v: &Value) -> String {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    format!("{}/{}", s("/metadata/namespace"), s("/metadata/name"))
}

/// A lab pod (docs/lab.md).
pub(crate) fn pod(ns: &str, name: &str, node: &str, ip: &str, uid: &str, created: &str, labels: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "uid": uid, "creationTimestamp": created, "labels": labels,
            "annotations": {"ktrace.io/netns": format!("kt-{ns}-{name}")}},
        "spec": {"nodeName": node, "hostNetwork": false, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "containerStatuses": [{"name": "c", "image": "busybox", "ready": true, "restartCount": 0,
                "containerID": format!("containerd://{}", uid.replace('-', "").repeat(2))}]},
    })
}

fn service(ns: &str, name: &str, ip: &str, labels: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "uid": format!("svc-{name}"), "labels": labels,
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 53, "protocol": "UDP"}]},
    })
}

fn node(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("node-{name}"), "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    })
}

/// The lab's objects: node-a, node-b; kube-dns and client on node-a, backend on node-b;
/// services kube-dns and backend (no kube-proxy in the lab: cluster IP = pod IP).
pub(crate) fn lab_objects() -> Vec<(Kind, Value)> {
    let t = "2026-01-01T00:00:00Z";
    vec![
        (Kind::Node, node("node-a", "192.168.77.10")),
        (Kind::Node, node("node-b", "192.168.77.11")),
        (
            Kind::Pod,
            pod(
                "kube-system",
                "kube-dns",
                "node-a",
                "10.244.1.10",
                "00000000-0000-4000-8000-000000000010",
                t,
                &json!({"k8s-app": "kube-dns"}),
            ),
        ),
        (
            Kind::Pod,
            pod(
                "critical-app",
                "client",
                "node-a",
                "10.244.1.20",
                "00000000-0000-4000-8000-000000000020",
                t,
                &json!({"app": "client"}),
            ),
        ),
        (
            Kind::Pod,
            pod(
                "critical-app",
                "backend",
                "node-b",
                "10.244.2.30",
                "00000000-0000-4000-8000-000000000030",
                t,
                &json!({"app": "backend"}),
            ),
        ),
        (Kind::Service, service("kube-system", "kube-dns", "10.244.1.10", &json!({"k8s-app": "kube-dns"}))),
        (Kind::Service, service("critical-app", "backend", "10.244.2.30", &json!({}))),
    ]
}

fn tls(dir: &Path) -> TlsAcceptor {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ktrace test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA cert");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("writing ca.pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("TLS config");
    TlsAcceptor::from(Arc::new(config))
}

impl ApiServer {
    /// Starts on a free loopback port with the lab's objects, and writes
    /// `kubeconfig` (and `ca.pem`) into a fresh directory.
    pub(crate) async fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ktrace-apiserver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (changes, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store { rv: 100, ..Store::default() }),
            changes,
            fail_500: AtomicBool::new(false),
            expire_watches: AtomicU32::new(0),
            requests: AtomicU32::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut s = Self { shared, acceptor: tls(&dir), addr, running: None, dir };
        for (k, o) in lab_objects() {
            s.apply(k, o);
        }
        s.write_kubeconfig(TOKEN);
        s.serve(listener);
        s
    }

    /// Writes `kubeconfig` with this token.
    pub(crate) fn write_kubeconfig(&self, token: &str) -> PathBuf {
        let p = self.dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: ktrace\n  user:\n    token: {token}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: ktrace\ncurrent-context: standin\n",
            self.addr,
            self.dir.join("ca.pem").display()
        );
        std::fs::write(&p, text).expect("writing kubeconfig");
        p
    }

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let acceptor = self.acceptor.clone();
        self.running = Some(tokio::spawn(async move {
            // Connections live in the set: aborting the server drops them all (like a crash).
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let shared = Arc::clone(&shared);
                        let acceptor = acceptor.clone();
                        conns.spawn(async move {
                            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
                                handle(tls, shared).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
    }

    /// Stops listening and drops every open connection.
    pub(crate) async fn stop(&mut self) {
        if let Some(h) = self.running.take() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Listens again on the same port, with the same objects.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.serve(l);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("rebinding {}: {last:?}", self.addr);
    }

    /// Every request answers 500 while set.
    pub(crate) fn fail_500(&self, on: bool) {
        self.shared.fail_500.store(on, Ordering::SeqCst);
    }

    /// The next `n` watch requests get 410 Gone (as a watch ERROR event), and
    /// open watches end, so the client must relist.
    pub(crate) fn expire_watches(&self, n: u32) {
        self.shared.expire_watches.store(n, Ordering::SeqCst);
        // Wake the open watches: an empty change with rv 0 tells them to end.
        let _ = self.shared.changes.send(Change { rv: 0, kind: Kind::Pod, ty: "EXPIRE", obj: Value::Null });
    }

    /// Requests served so far.
    pub(crate) fn requests(&self) -> u32 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    fn record(&self, kind: Kind, ty: &'static str, mut obj: Value) {
        let mut st = self.shared.store.lock().expect("store");
        st.rv += 1;
        let rv = st.rv;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let key = (kind, key_of(&obj));
        if ty == "DELETED" {
            st.objects.remove(&key);
        } else {
            st.objects.insert(key, obj.clone());
        }
        let c = Change { rv, kind, ty, obj };
        st.log.push(c.clone());
        let _ = self.shared.changes.send(c);
    }

    /// Adds or replaces an object (ADDED or MODIFIED to watchers).
    pub(crate) fn apply(&self, kind: Kind, obj: Value) {
        let exists = self.shared.store.lock().expect("store").objects.contains_key(&(kind, key_of(&obj)));
        self.record(kind, if exists { "MODIFIED" } else { "ADDED" }, obj);
    }

    /// Deletes `namespace/name`.
    pub(crate) fn delete(&self, kind: Kind, key: &str) {
        let obj = self.shared.store.lock().expect("store").objects.get(&(kind, key.to_owned())).cloned();
        if let Some(o) = obj {
            self.record(kind, "DELETED", o);
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(h) = self.running.take() {
            h.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, code: u16, body: &Value) {
    let body = body.to_string();
    let text = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        410 => "Gone",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.flush().await;
}

async fn chunk<S: AsyncWrite + Unpin>(s: &mut S, line: &str) -> bool {
    let data = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
    s.write_all(data.as_bytes()).await.is_ok() && s.flush().await.is_ok()
}

fn query(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3D", "=").replace("%3d", "=").replace("%2F", "/").replace("%2f", "/")))
        .collect();
    (path.to_owned(), params)
}

fn selected(kind: Kind, obj: &Value, sel: Option<&String>) -> bool {
    let Some(sel) = sel else { return true };
    match sel.strip_prefix("spec.nodeName=") {
        Some(n) if kind == Kind::Pod => obj.pointer("/spec/nodeName").and_then(Value::as_str) == Some(n),
        _ => true,
    }
}

/// One request per connection (`Connection: close`).
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return,
        }
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.lines();
    let target = lines.next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("/").to_owned();
    let authorized = lines.any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == format!("Bearer {TOKEN}"))
    });
    if !authorized {
        return respond(&mut s, 401, &status(401, "Unauthorized", "Unauthorized")).await;
    }
    if shared.fail_500.load(Ordering::SeqCst) {
        return respond(&mut s, 500, &status(500, "InternalError", "etcd is on fire")).await;
    }
    let (path, params) = query(&target);
    // Namespaced pod lists (agent discovery: `ktrace dns --agents`).
    let (path, namespace) = match path.strip_prefix("/api/v1/namespaces/").and_then(|r| r.split_once('/')) {
        Some((ns, rest)) => (format!("/api/v1/{rest}"), Some(ns.to_owned())),
        None => (path, None),
    };
    let labels = params.get("labelSelector").and_then(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned()));
    let in_scope = |o: &Value| {
        namespace.as_deref().is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            && labels.as_ref().is_none_or(|(k, v)| {
                o.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str())
            })
    };
    let kind = match path.as_str() {
        "/api/v1/pods" => Kind::Pod,
        "/api/v1/services" => Kind::Service,
        "/api/v1/nodes" => Kind::Node,
        _ => return respond(&mut s, 404, &status(404, "NotFound", &format!("{path} not served"))).await,
    };
    let sel = params.get("fieldSelector");
    if params.get("watch").map(String::as_str) != Some("true") {
        let body = {
            let st = shared.store.lock().expect("store");
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((k, _), o)| *k == kind && selected(kind, o, sel) && in_scope(o))
                .map(|(_, o)| o.clone())
                .collect();
            json!({"apiVersion": "v1", "kind": kind.list_kind(), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
        };
        return respond(&mut s, 200, &body).await;
    }
    // Watch.
    let from: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let timeout =
        Duration::from_secs(params.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(300).min(600));
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let expired = shared.expire_watches.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if expired {
        let e = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
        chunk(&mut s, &e.to_string()).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
        return;
    }
    let (backlog, mut rx) = {
        let st = shared.store.lock().expect("store");
        let b: Vec<Change> = st.log.iter().filter(|c| c.rv > from && c.kind == kind).cloned().collect();
        (b, shared.changes.subscribe())
    };
    for c in backlog {
        if selected(kind, &c.obj, sel) && !chunk(&mut s, &json!({"type": c.ty, "object": c.obj}).to_string()).await {
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let c = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(c)) => c,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => break,
        };
        if c.ty == "EXPIRE" {
            let e = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
            chunk(&mut s, &e.to_string()).await;
            break;
        }
        if c.kind == kind
            && c.rv > from
            && selected(kind, &c.obj, sel)
            && !chunk(&mut s, &json!({"type": c.ty, "object": c.obj}).to_string()).await
        {
            return;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let _ = s.flush().await;
}
