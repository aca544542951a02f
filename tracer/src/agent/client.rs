//! Connecting to agents: a Unix socket on this node, or TCP with a bearer
//! token (and TLS/mTLS when configured).

use std::{path::PathBuf, sync::Arc};

use tonic::{
    Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::proto::agent_client::AgentClient;

/// Errors reaching an agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address does not parse.
    #[error("bad agent address {0:?}: expected unix:/path or HOST:PORT (https://HOST:PORT for TLS)")]
    Address(String),
    /// A credentials file could not be read.
    #[error("{path}: {source}")]
    File {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("connecting to agent {target}: {source}")]
    Connect {
        /// Where.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The token is not a valid header value.
    #[error("the agent token contains characters not allowed in a header")]
    Token,
}

/// Where an agent is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket.
    Unix(PathBuf),
    /// `host:port` over TCP (`tls`: HTTPS).
    Tcp {
        /// `host:port`.
        addr: String,
        /// TLS.
        tls: bool,
    },
}

impl std::str::FromStr for Target {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, ClientError> {
        if let Some(p) = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")) {
            return if p.is_empty() { Err(ClientError::Address(s.into())) } else { Ok(Self::Unix(p.into())) };
        }
        let (addr, tls) = match (s.strip_prefix("https://"), s.strip_prefix("http://")) {
            (Some(a), _) => (a, true),
            (None, Some(a)) => (a, false),
            (None, None) => (s, false),
        };
        let ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if ok { Ok(Self::Tcp { addr: addr.into(), tls }) } else { Err(ClientError::Address(s.into())) }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp { addr, tls: true } => write!(f, "https://{addr}"),
            Self::Tcp { addr, tls: false } => write!(f, "{addr}"),
        }
    }
}

/// Client credentials.
#[derive(Clone, Debug, Default)]
pub struct ClientAuth {
    /// Bearer token (TCP).
    pub token: Option<String>,
    /// CA that signed the agents' certificates (TLS).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Server name to verify (default: the host of the address).
    pub tls_name: Option<String>,
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(Option<Arc<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", (**v).clone());
        }
        Ok(req)
    }
}

/// A connected agent client.
pub type Client = AgentClient<InterceptedService<Channel, Bearer>>;

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File { path: path.clone(), source })
}

/// Connects to `target`.
pub async fn connect(target: &Target, auth: &ClientAuth) -> Result<Client, ClientError> {
    let name = target.to_string();
    let err = |source| ClientError::Connect { target: name.clone(), source };
    let channel = match target {
        Target::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API but unused: the connector dials the socket.
            Endpoint::from_static("http://ktrace-agent.invalid")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await
                .map_err(err)?
        }
        Target::Tcp { addr, tls } => {
            let scheme = if *tls { "https" } else { "http" };
            let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(err)?;
            ep = ep.connect_timeout(std::time::Duration::from_secs(5));
            if *tls {
                let mut cfg = ClientTlsConfig::new();
                if let Some(ca) = &auth.ca {
                    cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
                }
                if let Some((cert, key)) = &auth.identity {
                    cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                if let Some(n) = &auth.tls_name {
                    cfg = cfg.domain_name(n.clone());
                }
                ep = ep.tls_config(cfg).map_err(err)?;
            }
            ep.connect().await.map_err(err)?
        }
    };
    let bearer = match &auth.token {
        Some(t) => Some(Arc::new(format!("Bearer {t}").parse().map_err(|_| ClientError::Token)?)),
        None => None,
    };
    Ok(AgentClient::with_interceptor(channel, Bearer(bearer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            "unix:/run/ktrace/agent.sock".parse::<Target>().unwrap(),
            Target::Unix("/run/ktrace/agent.sock".into())
        );
        assert_eq!(
            "10.0.0.1:4247".parse::<Target>().unwrap(),
            Target::Tcp { addr: "10.0.0.1:4247".into(), tls: false }
        );
        assert_eq!(
            "https://agent.example:4247".parse::<Target>().unwrap(),
            Target::Tcp { addr: "agent.example:4247".into(), tls: true }
        );
        assert_eq!("[::1]:4247".parse::<Target>().unwrap(), Target::Tcp { addr: "[::1]:4247".into(), tls: false });
        for bad in ["", "unix:", "host", "host:port", ":4247"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?}");
        }
    }
}
