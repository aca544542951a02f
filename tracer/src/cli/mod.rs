//! Subcommands, one file each. Arguments and JSON field names are a public
//! contract (see docs/json.md): add, never rename.

pub mod agent;
pub mod dns;
pub mod doctor;
pub mod drops;
pub mod kubectl;
pub mod programs;
pub mod record;
pub mod replay;
pub mod shell;
pub use crate::compose::underlay;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    enrich::{Enricher, Snapshot},
    pipeline::Filter,
};

/// ktrace: explains Kubernetes DNS and networking failures from inside the kernel.
#[derive(Debug, Parser)]
#[command(name = "ktrace", version, about, long_about = None)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Command,
}

/// Options shared by all subcommands.
#[derive(Debug, Args)]
pub struct Global {
    /// Name of this node, recorded in captures and used by `--node` without a value.
    /// Default: $`NODE_NAME`, else the hostname.
    #[arg(long, global = true, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Pod/node/service metadata from a `kubectl get pods,services,nodes -A -o json` file.
    #[arg(long, global = true, value_name = "FILE")]
    pub kube_snapshot: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// More logging (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Kubernetes API credentials for live metadata. Default: the in-cluster
    /// service account, else $KUBECONFIG, else ~/.kube/config (unless `--kube-snapshot`).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Report metadata as stale (`"metadata_stale": true`) after this long
    /// without a successful list/watch from the Kubernetes API.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub metadata_stale_after: Duration,
    /// Never contact the Kubernetes API, even when credentials are found.
    #[arg(long, global = true)]
    pub no_kube_api: bool,
    /// Retired, no effect (prints a deprecation notice): live tracing runs
    /// under `SCHED_IDLE` with catch-up by default, and measured no better
    /// with this flag (see `source::sched`).
    #[arg(long, global = true, hide = true)]
    pub sched_idle: bool,
    /// Retired, no effect (prints a deprecation notice): its only measured
    /// gain was throughput bought by losing events (see `source::sched`).
    #[arg(long, global = true, hide = true)]
    pub no_catch_up: bool,
    /// Run at normal priority throughout. By default live tracing (`dns`,
    /// `drops`, `record`, `agent`) reads the ring buffer under `SCHED_IDLE`:
    /// it only takes CPU time the workload leaves idle, so it hardly delays
    /// the traced processes, and when the ring buffer backs up (a quarter
    /// full) it runs at normal priority for 100 ms at a time to catch up, so
    /// events are lost only if even that is not enough (counted and
    /// reported). With this flag ktrace keeps up with the ring buffer at the
    /// cost of taking CPU time from a busy workload.
    #[arg(long, global = true)]
    pub sched_normal: bool,

    /// Kernel debug logs: the programs say why they skipped or fell back
    /// (debug and trace records, target `bpf`; shown with -vv or
    /// `RUST_LOG=bpf=trace`). Off, the log statements are removed when the
    /// programs are loaded and cost nothing.
    #[arg(long, global = true)]
    pub bpf_log: bool,
}

impl Global {
    /// Applies `--bpf-log` to the programs loaded from now on, at the
    /// logger's level (call after the logger is set up). Returns a warning
    /// when that level prints none of the kernel's records.
    #[must_use]
    pub fn apply_bpf_log(&self) -> Option<&'static str> {
        if !self.bpf_log {
            return None;
        }
        crate::bpf::klog::enable(log::max_level());
        (log::max_level() < log::LevelFilter::Debug)
            .then_some("--bpf-log: the kernel's log records are debug and trace; add -vv to see them")
    }

    /// The scheduling policy the flags ask for.
    #[must_use]
    pub fn sched_policy(&self) -> crate::source::sched::Policy {
        use crate::source::sched::Policy;
        if self.sched_normal { Policy::Normal } else { Policy::IdleWhenLive }
    }

    /// The one-line notice for the retired `--sched-idle`/`--no-catch-up`
    /// (accepted so scripts keep working; they change nothing).
    #[must_use]
    pub fn retired_sched_flags(&self) -> Option<&'static str> {
        match (self.sched_idle, self.no_catch_up) {
            (false, false) => None,
            (true, false) => Some(
                "--sched-idle is deprecated and has no effect: live tracing runs at idle priority with catch-up by default",
            ),
            (false, true) => Some(
                "--no-catch-up is deprecated and has no effect: live tracing catches up when the ring buffer backs up",
            ),
            (true, true) => Some(
                "--sched-idle and --no-catch-up are deprecated and have no effect: live tracing runs at idle priority with catch-up by default",
            ),
        }
    }

    /// Applies the scheduling flags to this process (see [`crate::source::sched::Policy`]).
    ///
    /// # Errors
    /// If the kernel refuses the policy.
    pub fn apply_sched(&self) -> std::io::Result<()> {
        self.sched_policy().apply()
    }
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table with plain-language findings, fitted to the terminal.
    Table,
    /// JSON Lines (see docs/json.md).
    Json,
    /// The table with every column at full width, whatever the terminal (as `kubectl -o wide`).
    Wide,
}

impl Format {
    /// Whether this is one of the human-readable tables (`table` or `wide`).
    #[must_use]
    pub fn is_table(self) -> bool {
        matches!(self, Self::Table | Self::Wide)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace DNS live (or from captures with -r): every query with pod, process,
    /// server, rcode and latency, then findings that explain slow resolution.
    Dns(dns::DnsArgs),
    /// Where packets die and why: kernel drops with reasons, failed TCP
    /// connections, packets lost between nodes (live, or `-r` per node).
    Drops(drops::DropsArgs),
    /// Record everything ktrace sees, plus the context to analyse it elsewhere, to a pcapng file.
    /// With `--ns`/`--pod`/`--node` it keeps those pods' traffic and the DNS of the resolvers they query.
    Record(record::RecordArgs),
    /// Print every event of captures in time order (the `sysdig -r` equivalent).
    Replay(replay::ReplayArgs),
    /// Check which kernel hooks work here and what ktrace can do with them.
    Doctor,
    /// Load every kernel program without attaching it and report the
    /// verifier's figures per program (for `cargo xtask kernels`).
    #[command(hide = true)]
    Programs,
    /// Node daemon: owns this node's BPF programs and streams what they see over
    /// gRPC to `ktrace dns|drops|record --agent…`; Prometheus metrics, /healthz, /readyz.
    Agent(agent::AgentArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(shell::CompletionsArgs),
    /// Write the manual pages (ktrace.1 and one per subcommand), or print ktrace.1.
    Man(shell::ManArgs),
}

/// Reading from node agents instead of this kernel (`dns`, `drops`, `record`).
#[derive(Clone, Debug, Default, Args)]
#[group(id = "agent_sel", multiple = true, required = false)]
pub struct AgentSelect {
    /// Read from this node agent: `unix:/run/ktrace/agent.sock`, `HOST:PORT`, or
    /// `https://HOST:PORT` (repeatable; streams merge by time).
    #[arg(long = "agent", value_name = "ADDR")]
    pub agent: Vec<String>,
    /// Read from every agent found through the Kubernetes API (running pods matching
    /// `--agent-selector` in `--agent-namespace`, at `--agent-port`).
    #[arg(long)]
    pub agents: bool,
    /// Namespace of the agent `DaemonSet`.
    #[arg(long, value_name = "NAMESPACE", default_value = "ktrace")]
    pub agent_namespace: String,
    /// Label selector of the agent pods.
    #[arg(long, value_name = "SELECTOR", default_value = "app.kubernetes.io/name=ktrace-agent")]
    pub agent_selector: String,
    /// gRPC port of discovered agents.
    #[arg(long, value_name = "PORT", default_value_t = 4247)]
    pub agent_port: u16,
    /// File with the agents' bearer token (TCP).
    #[arg(long, value_name = "FILE", env = "KTRACE_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// CA certificate of the agents (TLS; implies https for discovered agents).
    #[arg(long, value_name = "FILE")]
    pub agent_ca: Option<PathBuf>,
    /// Client certificate for mTLS (with --agent-key).
    #[arg(long, value_name = "FILE", requires = "agent_key")]
    pub agent_cert: Option<PathBuf>,
    /// Client key for mTLS.
    #[arg(long, value_name = "FILE", requires = "agent_cert")]
    pub agent_key: Option<PathBuf>,
    /// Server name to verify in the agents' certificates.
    #[arg(long, value_name = "NAME")]
    pub agent_tls_name: Option<String>,
    /// With agents: start with their history of the last DURATION (bounded by each agent's --history-mib).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
}

impl AgentSelect {
    /// `since_unix_ns` for a subscription (0: live only).
    #[must_use]
    pub fn since_ns(&self) -> u64 {
        self.since.map_or(0, |d| crate::source::realtime_ns().saturating_sub(d.as_nanos() as u64))
    }

    /// The metadata agent mode starts from: `--kube-snapshot` if given (then
    /// the streams' snapshots are ignored), else empty, filled from the streams.
    pub fn enricher(g: &Global) -> anyhow::Result<(Enricher, bool)> {
        let snap = g.snapshot()?;
        Ok((snap.as_ref().map_or_else(Enricher::empty, Enricher::from_snapshot), snap.is_some()))
    }

    /// The agents' `kinds` as a source, read until `duration` or Ctrl-C.
    /// Unscoped: the resolver's forwarded query explains a client's wait,
    /// and only the client side knows which pod it belongs to.
    pub fn source(
        &self,
        g: &Global,
        what: &str,
        kinds: &[crate::agent::proto::Kind],
        duration: Option<Duration>,
    ) -> anyhow::Result<crate::agent::reader::AgentSource> {
        let (targets, auth) = self.resolve(g)?;
        eprintln!("ktrace: reading {what} from {} agent(s); Ctrl-C to stop", targets.len());
        let cfg = crate::agent::reader::AgentSourceConfig {
            targets,
            auth,
            request: crate::agent::proto::SubscribeRequest {
                kinds: kinds.iter().map(|k| *k as i32).collect(),
                since_unix_ns: self.since_ns(),
                ..Default::default()
            },
            duration,
            lag: Duration::from_millis(200),
            local: None,
        };
        Ok(crate::agent::reader::AgentSource { cfg })
    }

    /// Reads the agents' `kinds` until `duration` or Ctrl-C, as `drops`
    /// does: the streams' snapshots go into the enricher of `meta`
    /// (from [`Self::enricher`]; not when it came from `--kube-snapshot`),
    /// notices to stderr, everything else to `on`. Returns
    /// the warnings to show; fails when every agent refused this client.
    pub fn read(
        &self,
        g: &Global,
        what: &str,
        kinds: &[crate::agent::proto::Kind],
        duration: Option<Duration>,
        meta: &(Enricher, bool),
        mut on: impl FnMut(crate::agent::reader::AgentEvent),
    ) -> anyhow::Result<Vec<String>> {
        use crate::{agent::reader::AgentEvent, source::file::FileEvent};
        let (enricher, user_snapshot) = (&meta.0, meta.1);
        self.source(g, what, kinds, duration)?.run_events(|ev| {
            match ev {
                AgentEvent::File(FileEvent::Snapshot(s)) => {
                    if !user_snapshot {
                        // Merged, not replaced: each agent lists its own node's pods.
                        enricher.apply_snapshot(&s);
                    }
                }
                AgentEvent::Notice(n) => eprintln!("ktrace: {n}"),
                other => on(other),
            }
            true
        })
    }

    /// Whether agents were asked for.
    #[must_use]
    pub fn active(&self) -> bool {
        self.agents || !self.agent.is_empty()
    }

    /// The agents to read from (discovery through the API for `--agents`) and credentials.
    pub fn resolve(
        &self,
        g: &Global,
    ) -> anyhow::Result<(Vec<crate::agent::client::Target>, crate::agent::client::ClientAuth)> {
        use crate::agent::client::{ClientAuth, Target};
        let mut targets = self.agent.iter().map(|a| a.parse::<Target>()).collect::<Result<Vec<_>, _>>()?;
        if self.agents {
            let origin = crate::enrich::kube::ApiOrigin::detect(g.kubeconfig.as_deref(), g.context.as_deref())
                .context("--agents needs the Kubernetes API (kubeconfig or in-cluster); or name them with --agent")?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let pods = rt.block_on(crate::enrich::kube::discover_agents(
                &origin,
                &self.agent_namespace,
                &self.agent_selector,
            ))?;
            anyhow::ensure!(
                !pods.is_empty(),
                "no running agent pods in namespace {} matching {}",
                self.agent_namespace,
                self.agent_selector
            );
            for p in pods {
                let host = if p.ip.contains(':') { format!("[{}]", p.ip) } else { p.ip.clone() };
                eprintln!("ktrace: agent {} on node {}", p.name, p.node.as_deref().unwrap_or("?"));
                targets.push(Target::Tcp { addr: format!("{host}:{}", self.agent_port), tls: self.agent_ca.is_some() });
            }
        }
        let token = match &self.agent_token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("--agent-token-file {}", p.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("KTRACE_AGENT_TOKEN").ok(),
        };
        let auth = ClientAuth {
            token,
            ca: self.agent_ca.clone(),
            identity: self.agent_cert.clone().zip(self.agent_key.clone()),
            tls_name: self.agent_tls_name.clone(),
        };
        Ok((targets, auth))
    }
}

/// Pod selection shared by `dns`, `record` and `drops`.
#[derive(Clone, Debug, Default, Args)]
pub struct PodScope {
    /// Only pods of this Kubernetes namespace.
    #[arg(short = 'n', long = "ns", visible_alias = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this pod (`name` or `namespace/name`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only pods on this node; `--node` alone means this node (`--node-name`).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub node: Option<String>,
}

impl PodScope {
    /// The selection as a [`Filter`], `--node` alone resolved to this node.
    #[must_use]
    pub fn filter(&self, g: &Global) -> Filter {
        Filter {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            node: self.node.as_ref().map(|n| if n.is_empty() { g.node().to_string() } else { n.clone() }),
            ..Filter::default()
        }
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Global {
    /// The metadata options, for the library's composition code.
    #[must_use]
    pub fn meta(&self) -> crate::compose::MetaSource {
        crate::compose::MetaSource {
            node_name: self.node_name.clone(),
            kube_snapshot: self.kube_snapshot.clone(),
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            metadata_stale_after: self.metadata_stale_after,
            no_kube_api: self.no_kube_api,
        }
    }

    /// This node's name: `--node-name`, `$NODE_NAME`, else the hostname.
    #[must_use]
    pub fn node(&self) -> Arc<str> {
        self.meta().node()
    }

    /// The snapshot named by `--kube-snapshot`, if any.
    pub fn snapshot(&self) -> anyhow::Result<Option<Snapshot>> {
        self.meta().snapshot()
    }

    /// Where live metadata comes from (see [`crate::compose::MetaSource::kube_origin`]).
    #[must_use]
    pub fn kube_origin(&self) -> Option<crate::enrich::kube::ApiOrigin> {
        self.meta().kube_origin()
    }

    /// Live metadata (see [`crate::compose::MetaSource::live_metadata`]).
    pub fn live_metadata(&self, cgroup_root: &std::path::Path) -> anyhow::Result<(Enricher, Option<Snapshot>)> {
        self.meta().live_metadata(cgroup_root)
    }
}

/// Resolves `--netns`: an inode number or a name under /run/netns.
pub fn netns_arg(s: &str) -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let p = std::path::Path::new("/run/netns").join(s);
    let m = std::fs::metadata(&p)
        .with_context(|| format!("--netns {s}: not an inode number and {} is missing", p.display()))?;
    u32::try_from(m.ino()).context("netns inode out of range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_mins(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let c =
            Cli::try_parse_from(["ktrace", "dns", "--ns", "critical-app", "-o", "json", "--duration", "5s"]).unwrap();
        assert_eq!(c.global.output, Format::Json);
        let c = Cli::try_parse_from(["ktrace", "dns", "-n", "critical-app", "-o", "wide"]).unwrap();
        assert_eq!(c.global.output, Format::Wide);
        let Command::Dns(d) = c.cmd else { panic!("dns") };
        assert_eq!(d.scope.namespace.as_deref(), Some("critical-app"));
    }
}
