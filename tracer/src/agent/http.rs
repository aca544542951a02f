//! The agent's plain HTTP endpoints: `/metrics` (Prometheus), `/healthz`
//! (liveness) and `/readyz` (readiness).
//!
//! Served by hyper's HTTP/1 server with tight bounds, since the port is
//! reachable from the pod network: a fixed number of connections at once
//! (further clients wait in the listen backlog), a deadline for request
//! headers, a small header buffer and a maximum connection age, so no client
//! can hold memory or a slot for long.

use std::{
    convert::Infallible,
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};

use super::metrics::Metrics;

/// Content type of the text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Refreshes on-demand gauges before `/metrics` renders.
pub type RenderHook = Box<dyn Fn(&Metrics) + Send + Sync>;

/// Whether the agent is alive, for `/healthz`.
pub type HealthCheck = Box<dyn Fn() -> bool + Send + Sync>;

/// What the endpoints report.
pub struct HttpState {
    /// Rendered on `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// `GET /readyz` answers 200 while true, 503 otherwise.
    pub ready: Arc<AtomicBool>,
    /// Called before each render to refresh gauges that are read on demand
    /// (history size, subscribers, BPF program stats). Runs on a blocking
    /// thread, so it may make syscalls; it should still be quick.
    pub before_render: Option<RenderHook>,
    /// `GET /healthz` answers 503 when this returns false (e.g. the event
    /// loop stopped making progress); without it, answering at all is the proof of life.
    pub healthy: Option<HealthCheck>,
}

impl HttpState {
    /// State without hooks.
    #[must_use]
    pub fn new(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Self {
        Self { metrics, ready, before_render: None, healthy: None }
    }
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .field("before_render", &self.before_render.is_some())
            .field("healthy", &self.healthy.is_some())
            .finish_non_exhaustive()
    }
}

/// Resource bounds of the server.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A connection that has not sent complete request headers this long
    /// after it opened (or after its previous response) is closed.
    pub header_read_timeout: Duration,
    /// Connections are asked to close (after the current request) at this age.
    pub max_connection_age: Duration,
    /// How long a closing connection may take to finish its request, on
    /// shutdown or at `max_connection_age`.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_mins(2),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves the endpoints on `listener` with [`HttpLimits::default`] until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, state, shutdown, HttpLimits::default()).await
}

/// Serves the endpoints on `listener` until `shutdown` completes, then lets
/// open connections finish their request (at most `limits.shutdown_grace`).
/// Fails only when the listener fails for good.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: HttpLimits,
) -> io::Result<()> {
    let max = u32::try_from(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(16 * 1024)
        .max_headers(64);
    tokio::pin!(shutdown);
    let result = loop {
        // Take a slot before accepting: past the limit, clients wait in the backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break Ok(()),
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Ok(()),
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break Ok(()),
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) if is_transient(&e) => {
                    log::warn!("http: accept: {e}");
                    // Out of descriptors or memory: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => break Err(e),
            },
        };
        tokio::spawn(connection(stream, Arc::clone(&state), builder.clone(), stop_rx.clone(), limits, permit));
    };
    drop(listener);
    drop(stop_tx);
    // Every connection holds a slot; all slots back means all are done.
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(max)).await.is_err() {
        log::debug!("http: connections still open after the shutdown grace period");
    }
    result
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    ) || e.raw_os_error().is_some_and(|n| {
        use nix::errno::Errno;
        matches!(Errno::from_raw(n), Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM | Errno::EPROTO)
    })
}

async fn connection(
    stream: TcpStream,
    state: Arc<HttpState>,
    builder: http1::Builder,
    mut stop: watch::Receiver<()>,
    limits: HttpLimits,
    _slot: OwnedSemaphorePermit,
) {
    let svc = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(state, &req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                log::debug!("http: connection: {e}");
            }
            return;
        }
        // Err: the server is shutting down (the sender is gone).
        _ = stop.changed() => {}
        () = tokio::time::sleep(limits.max_connection_age) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Ok(Err(e)) = tokio::time::timeout(limits.shutdown_grace, conn).await {
        log::debug!("http: connection: {e}");
    }
}

async fn handle(state: Arc<HttpState>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::GET {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    match path {
        "/metrics" => {
            // The hook may make syscalls (BPF program stats): keep it off the async workers.
            let rendered = tokio::task::spawn_blocking(move || {
                if let Some(hook) = &state.before_render {
                    hook(&state.metrics);
                }
                state.metrics.render()
            })
            .await;
            match rendered {
                Ok(body) => {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                    resp
                }
                Err(e) => {
                    log::warn!("http: rendering metrics: {e}");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            }
        }
        "/healthz" => {
            if state.healthy.as_ref().is_none_or(|f| f()) {
                text(StatusCode::OK, "ok")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
            }
        }
        _ => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Instant};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::oneshot,
        task::JoinHandle,
    };

    use super::*;
    use crate::{agent::metrics::MetricsConfig, testkit::exposition::parse_exposition};

    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<io::Result<()>>,
        ready: Arc<AtomicBool>,
    }

    impl Server {
        async fn stop(mut self) -> io::Result<()> {
            let _ = self.stop.take().expect("not stopped").send(());
            tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("serve returns").expect("no panic")
        }
    }

    async fn start(state: HttpState, limits: HttpLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let ready = Arc::clone(&state.ready);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve_with(
            listener,
            Arc::new(state),
            async move {
                let _ = rx.await;
            },
            limits,
        ));
        Server { addr, stop: Some(tx), task, ready }
    }

    fn state() -> HttpState {
        HttpState::new(Arc::new(Metrics::new(MetricsConfig::default())), Arc::new(AtomicBool::new(false)))
    }

    /// Sends `req` raw and reads to EOF: (status, head, body).
    async fn raw(addr: SocketAddr, req: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        let text = String::from_utf8(buf).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
        (status, head.to_owned(), body.to_owned())
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        raw(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")).await
    }

    #[tokio::test]
    async fn routes() {
        let mut st = state();
        st.metrics.set_gauge("ktrace_subscribers", "Subscribers.", 0.0);
        st.before_render = Some(Box::new(|m: &Metrics| m.set_gauge("ktrace_subscribers", "Subscribers.", 3.0)));
        let srv = start(st, HttpLimits::default()).await;

        let (status, head, body) = get(srv.addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(head.to_ascii_lowercase().contains(&format!("content-type: {METRICS_CONTENT_TYPE}")), "{head}");
        let samples = parse_exposition(&body).expect("valid exposition");
        let subs = samples.iter().find(|s| s.name == "ktrace_subscribers").expect("gauge present");
        assert!((subs.value - 3.0).abs() < f64::EPSILON, "hook ran before render");

        let (status, _, body) = get(srv.addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        let (status, _, body) = get(srv.addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not ready"));
        srv.ready.store(true, Ordering::Release);
        let (status, _, body) = get(srv.addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready"));
        srv.ready.store(false, Ordering::Release);
        assert_eq!(get(srv.addr, "/readyz").await.0, 503);

        assert_eq!(get(srv.addr, "/").await.0, 404);
        assert_eq!(get(srv.addr, "/metricsx").await.0, 404);
        // The query string does not change the route.
        assert_eq!(get(srv.addr, "/healthz?verbose=1").await.0, 200);

        let (status, head, _) =
            raw(srv.addr, "POST /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        assert_eq!(status, 405);
        assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
        assert_eq!(raw(srv.addr, "DELETE /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.0, 404);

        // Malformed requests get a 400 from hyper, not a hang.
        assert_eq!(raw(srv.addr, "GARBAGE\r\n\r\n").await.0, 400);

        srv.stop().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests() {
        let srv = start(state(), HttpLimits::default()).await;
        let mut s = TcpStream::connect(srv.addr).await.expect("connect");
        s.write_all(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
        let mut buf = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf)).await.expect("in time").expect("read");
        assert_eq!(buf.matches("HTTP/1.1 ").count(), 2, "{buf}");
        assert!(buf.contains("HTTP/1.1 200") && buf.contains("HTTP/1.1 503"), "{buf}");
        srv.stop().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn unhealthy_hook() {
        let mut st = state();
        st.healthy = Some(Box::new(|| false));
        let srv = start(st, HttpLimits::default()).await;
        let (status, _, body) = get(srv.addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (503, "unhealthy"));
        srv.stop().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn slow_client_is_cut_off() {
        let limits = HttpLimits { header_read_timeout: Duration::from_millis(200), ..HttpLimits::default() };
        let srv = start(state(), limits).await;
        let mut s = TcpStream::connect(srv.addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n").await.expect("write");
        let t0 = Instant::now();
        let mut buf = Vec::new();
        // Closed (possibly after a 408) well before the 5 s test timeout.
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.expect("closed in time");
        assert!(r.as_ref().is_ok() || r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&buf));
        srv.stop().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn connection_limit_queues_clients() {
        let limits = HttpLimits { max_connections: 1, ..HttpLimits::default() };
        let srv = start(state(), limits).await;
        // Holds the only slot without sending anything.
        let idle = TcpStream::connect(srv.addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let addr = srv.addr;
        let second = tokio::spawn(async move { get(addr, "/healthz").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "served past the connection limit");
        drop(idle);
        let (status, _, _) =
            tokio::time::timeout(Duration::from_secs(5), second).await.expect("in time").expect("no panic");
        assert_eq!(status, 200);
        srv.stop().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_listener() {
        let srv = start(state(), HttpLimits::default()).await;
        let addr = srv.addr;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        // A finished request on a kept-alive connection, then idle.
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 512];
        let n = idle.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let t0 = Instant::now();
        srv.stop().await.expect("clean shutdown");
        assert!(t0.elapsed() < Duration::from_secs(2), "idle connection delayed shutdown");
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest)).await.expect("closed");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert!(TcpStream::connect(addr).await.is_err(), "listener still open");
    }
}
