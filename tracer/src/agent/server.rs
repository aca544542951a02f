//! The agent's gRPC service and its listeners: a Unix socket (mode 0660,
//! peers checked by their kernel-reported credentials) for a CLI on the same
//! node, and TCP with a bearer token (optionally TLS / mTLS) for the rest.

use std::{
    io::Write as _,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{
    hub::Hub,
    proto::{self, agent_server::Agent},
    stream::{Kinds, Spec, pump},
};
use crate::{capture::open_private, pipeline::Filter};

/// Where the agent listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// TCP `host:port`.
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")) {
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        let t = s.strip_prefix("tcp://").unwrap_or(s);
        t.parse().map(Self::Tcp).map_err(|e| format!("{s:?}: expected unix:/path or HOST:PORT ({e})"))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// State the service shares with the daemon loop.
pub struct Shared {
    /// Records.
    pub hub: Arc<Hub>,
    /// This node.
    pub node: Arc<str>,
    /// Programs attached and the loop running.
    pub ready: Arc<AtomicBool>,
    /// Kernel events lost so far (updated by the loop).
    pub kernel_lost: Arc<std::sync::atomic::AtomicU64>,
    /// Underlay devices fingerprinted.
    pub underlay: Vec<String>,
    /// Attach warnings.
    pub warnings: Vec<String>,
    /// Where `Record` writes (canonical, created at startup).
    pub capture_dir: PathBuf,
}

/// The gRPC service.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// A service over the daemon's shared state.
    #[must_use]
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn spec(kinds: &[i32], namespace: &str, pod: &str, since: u64, history_only: bool, hb: u32) -> Spec {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Spec {
            kinds: Kinds::from_request(kinds),
            scope: Filter { namespace: opt(namespace), pod: opt(pod), ..Filter::default() },
            since_ns: since,
            history_only,
            heartbeat_every: hb,
        }
    }

    fn start(&self, spec: Spec) -> mpsc::Receiver<super::stream::Chunk> {
        let (tx, rx) = mpsc::channel(16);
        let sh = Arc::clone(&self.shared);
        let lost = Arc::clone(&sh.kernel_lost);
        tokio::spawn(pump(Arc::clone(&sh.hub), spec, Arc::clone(&sh.node), move || lost.load(Ordering::Relaxed), tx));
        rx
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::SubscribeResponse, Status>> + Send>>;

/// A valid capture file name: one path component, no leading dot, sane characters.
fn check_file_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("bad capture file name {name:?}: use [A-Za-z0-9._-], no leading dot")))
    }
}

#[tonic::async_trait]
impl Agent for Service {
    type SubscribeStream = ChunkStream;

    async fn info(&self, _req: Request<proto::InfoRequest>) -> Result<Response<proto::InfoResponse>, Status> {
        let sh = &self.shared;
        let (n, bytes, oldest) = sh.hub.history_size();
        Ok(Response::new(proto::InfoResponse {
            node: sh.node.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: 1,
            underlay: sh.underlay.clone(),
            history_bytes: bytes as u64,
            history_records: n as u64,
            oldest_unix_ns: oldest,
            ready: sh.ready.load(Ordering::Relaxed),
            warnings: sh.warnings.clone(),
            kernel_lost: sh.kernel_lost.load(Ordering::Relaxed),
            subscribers: u32::try_from(sh.hub.subscribers()).unwrap_or(u32::MAX),
        }))
    }

    async fn subscribe(
        &self,
        req: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        let spec = Self::spec(&r.kinds, &r.namespace, &r.pod, r.since_unix_ns, r.history_only, 1);
        let rx = self.start(spec);
        let s = tokio_stream::wrappers::ReceiverStream::new(rx);
        let s = futures_util::StreamExt::map(s, |c| {
            Ok(proto::SubscribeResponse {
                pcapng: c.pcapng,
                findings: c.findings.into_iter().map(|(ts, json)| proto::Finding { ts_unix_ns: ts, json }).collect(),
                progress: c.progress.map(|p| proto::Progress {
                    watermark_unix_ns: p.watermark_ns,
                    kernel_lost: p.kernel_lost,
                    history_evicted: p.history_evicted,
                    subscriber_dropped: p.subscriber_dropped,
                }),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn record(&self, req: Request<proto::RecordRequest>) -> Result<Response<proto::RecordResponse>, Status> {
        let r = req.into_inner();
        check_file_name(&r.file_name)?;
        if r.duration_ms == 0 || r.duration_ms > 3_600_000 {
            return Err(Status::invalid_argument("duration_ms must be 1 .. 3600000"));
        }
        let path = self.shared.capture_dir.join(&r.file_name);
        let file = open_private(&path).map_err(|e| Status::failed_precondition(format!("{}: {e}", path.display())))?;
        // Heartbeats once a second: enough for coverage, small on disk.
        let spec = Self::spec(&r.kinds, &r.namespace, &r.pod, r.since_unix_ns, false, 10);
        let mut rx = self.start(spec);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(r.duration_ms);
        let compress = r.compress;
        // Back-pressure, not dropping: a slow disk makes this subscriber lag,
        // and the hub then writes the loss into the file as a Lost record.
        let (wtx, wrx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::task::spawn_blocking(move || write_capture(file, compress, wrx));
        let dropped = 0u64;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                c = rx.recv() => match c {
                    Some(c) => {
                        if !c.pcapng.is_empty() && wtx.send(c.pcapng).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        drop(rx);
        drop(wtx);
        let (records, bytes) = writer
            .await
            .map_err(|e| Status::internal(format!("writer: {e}")))?
            .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
        Ok(Response::new(proto::RecordResponse { path: path.display().to_string(), records, bytes, dropped }))
    }
}

fn write_capture(file: std::fs::File, compress: bool, mut rx: mpsc::Receiver<Vec<u8>>) -> std::io::Result<(u64, u64)> {
    let mut out = crate::capture::byte_sink(file, compress)?;
    let (mut blocks, mut bytes) = (0u64, 0u64);
    while let Some(c) = rx.blocking_recv() {
        out.write_all(&c)?;
        blocks += super::hub::split_blocks(&c).len() as u64;
        bytes += c.len() as u64;
    }
    out.flush()?;
    Ok((blocks, bytes))
}

/// Checks `authorization: Bearer <token>` on TCP listeners.
#[derive(Clone)]
pub struct TokenCheck {
    token: Option<Arc<[u8]>>,
}

impl TokenCheck {
    /// `None` accepts everyone (only used on the Unix socket, whose peers are checked by credentials).
    #[must_use]
    pub fn new(token: Option<&str>) -> Self {
        Self { token: token.map(|t| Arc::from(t.as_bytes())) }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.token else { return Ok(req) };
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(got.as_bytes(), want) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who may use the Unix socket: root, the agent's own user, or members of
/// its group (by the peer's primary gid, as the kernel reports it).
#[derive(Clone, Copy, Debug)]
pub struct PeerPolicy {
    /// Group allowed besides root and the agent's user.
    pub gid: Option<u32>,
}

impl PeerPolicy {
    /// Whether a peer with these credentials may connect.
    #[must_use]
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        let me = nix::unistd::geteuid().as_raw();
        uid == 0 || uid == me || self.gid.is_some_and(|g| g == gid)
    }
}

/// Binds the Unix socket: a stale file from a killed predecessor is
/// replaced, a live agent on the same path is an error. Mode 0660.
pub fn bind_unix(path: &Path, gid: Option<u32>) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket; refusing to replace it", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another agent is serving {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, None, Some(g)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(l)
}

/// Accepted Unix connections whose peers the policy allows (others are closed and logged).
pub fn unix_incoming(
    l: tokio::net::UnixListener,
    policy: PeerPolicy,
) -> impl Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    futures_util::stream::unfold((l, policy), |(l, policy)| async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => match s.peer_cred() {
                    Ok(c) if policy.allows(c.uid(), c.gid()) => return Some((Ok(s), (l, policy))),
                    Ok(c) => log::warn!("refused Unix peer uid={} gid={} pid={:?}", c.uid(), c.gid(), c.pid()),
                    Err(e) => log::warn!("refused Unix peer without credentials: {e}"),
                },
                Err(e) => {
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// TLS files for the TCP listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates are required (mTLS), if any.
    pub client_ca: Option<PathBuf>,
}

/// Serves the API on one listener until `shutdown` completes.
pub async fn serve(
    svc: Service,
    addr: ListenAddr,
    token: Option<String>,
    tls: Option<TlsFiles>,
    unix_gid: Option<u32>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let mut b = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(20)));
    match addr {
        ListenAddr::Unix(path) => {
            let l = bind_unix(&path, unix_gid)?;
            let api = proto::agent_server::AgentServer::with_interceptor(svc, TokenCheck::new(None));
            b.add_service(api)
                .serve_with_incoming_shutdown(unix_incoming(l, PeerPolicy { gid: unix_gid }), shutdown)
                .await?;
            let _ = std::fs::remove_file(&path);
        }
        ListenAddr::Tcp(a) => {
            let Some(token) = token else {
                anyhow::bail!("TCP listener {a} needs --token-file (refusing to serve node data unauthenticated)");
            };
            if let Some(t) = &tls {
                let cert = std::fs::read(&t.cert).with_context(|| format!("{}", t.cert.display()))?;
                let key = std::fs::read(&t.key).with_context(|| format!("{}", t.key.display()))?;
                let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
                if let Some(ca) = &t.client_ca {
                    let ca = std::fs::read(ca).with_context(|| format!("{}", ca.display()))?;
                    cfg = cfg.client_ca_root(Certificate::from_pem(ca));
                }
                b = b.tls_config(cfg).context("TLS configuration")?;
            }
            let l = tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding {a}"))?;
            let api = proto::agent_server::AgentServer::with_interceptor(svc, TokenCheck::new(Some(&token)));
            b.add_service(api)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(l), shutdown)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addrs() {
        assert_eq!("unix:/run/k.sock".parse::<ListenAddr>().unwrap(), ListenAddr::Unix("/run/k.sock".into()));
        assert_eq!("unix:///run/k.sock".parse::<ListenAddr>().unwrap(), ListenAddr::Unix("/run/k.sock".into()));
        assert_eq!("127.0.0.1:4247".parse::<ListenAddr>().unwrap(), ListenAddr::Tcp("127.0.0.1:4247".parse().unwrap()));
        assert!("nonsense".parse::<ListenAddr>().is_err());
        assert!("unix:".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn file_names() {
        assert!(check_file_name("a.pcapng").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "x\0", "é"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn private_files_refuse_symlinks_and_existing() {
        let d = std::env::temp_dir().join(format!("ktrace-priv-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("a.pcapng");
        let _ = std::fs::remove_file(&f);
        drop(open_private(&f).unwrap());
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(open_private(&f).is_err(), "existing file must not be reused");
        let l = d.join("link.pcapng");
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(d.join("target"), &l).unwrap();
        assert!(open_private(&l).is_err(), "symlink must not be followed");
        assert!(!d.join("target").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
