//! `ktrace agent`: the node daemon. Owns this node's BPF programs, keeps a
//! bounded history of recent records, streams them over gRPC to `ktrace dns
//! --agent …` / `ktrace drops --agents`, records on demand, and serves
//! Prometheus metrics with `/healthz` and `/readyz`.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;

use super::{Global, netns_arg, parse_duration};
use crate::agent::{
    client::{ClientAuth, Target},
    daemon::{AgentConfig, run as run_daemon},
    server::{ListenAddr, TlsFiles},
};

/// Arguments of `ktrace agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// gRPC listener: `unix:/path` (mode 0660, peers checked by credentials) or `HOST:PORT`
    /// (needs --token-file). Repeatable.
    #[arg(long, value_name = "ADDR", default_value = "unix:/run/ktrace/agent.sock")]
    pub listen: Vec<ListenAddr>,
    /// HTTP listener for /metrics, /healthz and /readyz (e.g. 0.0.0.0:9967).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// File holding the bearer token TCP clients must send (a Kubernetes Secret).
    /// A missing file disables TCP listeners (the Unix socket still works).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate for TCP listeners (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS key for TCP listeners (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Group (name or gid) allowed on the Unix socket besides root.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Where on-node recordings are written (mode 0700; files 0600, never through symlinks).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ktrace/captures")]
    pub capture_dir: PathBuf,
    /// Memory for the history of recent records that late subscribers can ask for.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub history_mib: usize,
    /// Kernel ring buffers in MiB, all CPUs together (each CPU gets a power-of-two share, at least 256 KiB).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub ring_mib: u32,
    /// DNS ports.
    #[arg(long, value_delimiter = ',', default_value = "53")]
    pub ports: Vec<u16>,
    /// Underlay interface(s) to fingerprint with tc (for cross-node loss);
    /// `auto`: the lower devices of the node's VXLAN, Geneve and IPIP links and
    /// the default route's device (where the overlay's packets go out).
    #[arg(long, value_name = "DEV")]
    pub underlay: Vec<String>,
    /// Only this node's network namespaces (inode or /run/netns name; lab nodes share one kernel).
    #[arg(long = "netns-scope", value_name = "NETNS")]
    pub netns_scope: Vec<String>,
    /// Pods with their own metric labels (others are folded into `pod="_other"`).
    #[arg(long, default_value_t = 50)]
    pub top_pods: usize,
    /// Stop after this long (default: until SIGTERM/SIGINT).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Time subscribers get to drain after SIGTERM.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// A peer agent (`unix:/path`, `HOST:PORT`, `https://HOST:PORT`; repeatable): this agent
    /// correlates its node with the peers' and exports `fabric_loss` towards its node as metrics.
    #[arg(long, value_name = "ADDR")]
    pub peer: Vec<String>,
    /// Find the peers through the Kubernetes API (the other running agent pods,
    /// `app.kubernetes.io/name=ktrace-agent` in this pod's namespace, port 4247), at start.
    #[arg(long)]
    pub peers: bool,
}

fn group_id(g: &str) -> anyhow::Result<u32> {
    if let Ok(n) = g.parse() {
        return Ok(n);
    }
    nix::unistd::Group::from_name(g)?.map(|g| g.gid.as_raw()).with_context(|| format!("no group {g:?}"))
}

/// The other agents of the `DaemonSet`, through the API (this pod's namespace).
fn discover_peers(g: &Global, tls: bool) -> anyhow::Result<Vec<Target>> {
    let origin = crate::enrich::kube::ApiOrigin::detect(g.kubeconfig.as_deref(), g.context.as_deref())
        .context("--peers needs the Kubernetes API")?;
    let ns = std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map_or_else(|_| "ktrace".to_owned(), |s| s.trim().to_owned());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let me = g.node();
    let pods =
        rt.block_on(crate::enrich::kube::discover_agents(&origin, &ns, "app.kubernetes.io/name=ktrace-agent"))?;
    Ok(pods
        .into_iter()
        .filter(|p| p.node.as_deref() != Some(&*me))
        .map(|p| {
            let host = if p.ip.contains(':') { format!("[{}]", p.ip) } else { p.ip };
            Target::Tcp { addr: format!("{host}:4247"), tls }
        })
        .collect())
}

/// Runs `ktrace agent`.
pub fn run(g: &Global, a: &AgentArgs) -> anyhow::Result<()> {
    let underlay = crate::compose::underlay::resolve(&a.underlay)?;
    if underlay.is_empty() && a.underlay.iter().any(|u| u == "auto") {
        anyhow::bail!(
            "--underlay auto: no tunnel lower device and no IPv4 default route in this network namespace; name the device"
        );
    }
    let token = match &a.token_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            Ok(_) => {
                eprintln!("ktrace agent: {} is empty: TCP listeners disabled", p.display());
                None
            }
            Err(e) => {
                eprintln!("ktrace agent: {}: {e}: TCP listeners disabled", p.display());
                None
            }
        },
        None => None,
    };
    check_listeners(&a.listen, token.is_some())?;
    let mut peers = a.peer.iter().map(|p| p.parse::<Target>()).collect::<Result<Vec<_>, _>>()?;
    if a.peers {
        // The node's own tracing matters more than correlation: an API that is
        // down at start costs the fabric-loss metric, not the agent.
        match discover_peers(g, a.tls_cert.is_some()) {
            Ok(p) => {
                eprintln!("ktrace agent: {} peer agent(s) found through the API", p.len());
                peers.extend(p);
            }
            Err(e) => eprintln!("ktrace agent: warning: --peers: {e:#}; no cross-node correlation"),
        }
    }
    let peer_auth = ClientAuth {
        token: token.clone(),
        ca: a.tls_client_ca.clone(),
        identity: a.tls_cert.clone().zip(a.tls_key.clone()),
        tls_name: None,
    };
    let cfg = AgentConfig {
        listen: a.listen.clone(),
        metrics: a.metrics,
        token,
        tls: a.tls_cert.clone().zip(a.tls_key.clone()).map(|(cert, key)| TlsFiles {
            cert,
            key,
            client_ca: a.tls_client_ca.clone(),
        }),
        socket_gid: a.socket_group.as_deref().map(group_id).transpose()?,
        capture_dir: a.capture_dir.clone(),
        history_bytes: a.history_mib.max(1) << 20,
        ports: a.ports.clone(),
        ring_bytes: a.ring_mib.max(1).next_power_of_two() << 20,
        underlay,
        netns_scope: a.netns_scope.iter().map(|n| netns_arg(n)).collect::<anyhow::Result<_>>()?,
        duration: a.duration,
        top_pods: a.top_pods,
        grace: a.grace,
        peers,
        peer_auth,
    };
    run_daemon(&g.meta(), &cfg)
}

/// An agent that would serve no gRPC listener at all is a configuration
/// error, not a daemon: TCP listeners need a bearer token.
fn check_listeners(listen: &[ListenAddr], have_token: bool) -> anyhow::Result<()> {
    let served = listen.iter().any(|l| !matches!(l, ListenAddr::Tcp(_)) || have_token);
    if !served {
        let list: Vec<String> = listen.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "no listener left to serve: {} need(s) a bearer token (--token-file with a non-empty token; TCP never serves node data unauthenticated); add the token or a Unix socket (--listen unix:/run/ktrace/agent.sock)",
            list.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_only_listener_is_an_error() {
        let tcp: ListenAddr = "127.0.0.1:4247".parse().unwrap();
        let unix: ListenAddr = "unix:/run/ktrace/agent.sock".parse().unwrap();
        let e = check_listeners(std::slice::from_ref(&tcp), false).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:4247") && e.contains("--token-file"), "{e}");
        check_listeners(std::slice::from_ref(&tcp), true).unwrap();
        check_listeners(&[tcp, unix], false).unwrap();
        assert!(check_listeners(&[], true).is_err());
    }
}
