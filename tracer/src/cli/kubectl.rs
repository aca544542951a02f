//! `kubectl ktrace`: the same binary, installed (linked or copied) as
//! `kubectl-ktrace` on the `PATH`, which is how kubectl finds plugins. It is
//! recognised by the name it was started under (`argv[0]`), and then:
//!
//! - help, usage and errors say `kubectl ktrace`;
//! - `-n/--namespace` works before the subcommand too (`kubectl ktrace -n
//!   critical-app dns`), as kubectl's own global flag does; `--context` and
//!   `--kubeconfig` are ktrace's global flags already and mean the same;
//! - `dns`, `drops` and `record` read from the node agents found through
//!   the Kubernetes API (`--agents`) unless `-r FILE` or `--agent ADDR` says
//!   otherwise: on a laptop running kubectl, the local kernel is not the
//!   cluster's.

use std::{
    ffi::{OsStr, OsString},
    path::Path,
    sync::OnceLock,
};

use clap::{CommandFactory as _, FromArgMatches as _};

use super::{Cli, Command};

/// The file name kubectl looks for (`kubectl ktrace` runs `kubectl-ktrace`).
pub const PLUGIN_FILE: &str = "kubectl-ktrace";

static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// How this process speaks of itself in messages: `kubectl ktrace` when run
/// as the plugin, else `ktrace`.
#[must_use]
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("ktrace")
}

/// Whether `argv0` names the kubectl plugin (`kubectl-ktrace`, any directory).
#[must_use]
pub fn is_plugin(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == PLUGIN_FILE)
}

/// The clap command, renamed for the plugin.
#[must_use]
pub fn command(plugin: bool) -> clap::Command {
    let c = Cli::command();
    if plugin { c.name(PLUGIN_FILE).bin_name("kubectl ktrace").display_name("kubectl ktrace") } else { c }
}

/// Global options that take a value (so the token after them is no subcommand).
const GLOBAL_VALUES: &[&str] =
    &["-o", "--output", "--node-name", "--kube-snapshot", "--kubeconfig", "--context", "--metadata-stale-after"];

/// Moves `-n NS`/`--namespace NS` (and their `=`/attached forms) given before
/// the subcommand to right after it, where the subcommand's own flag takes it.
#[must_use]
pub fn namespace_after_subcommand(args: Vec<OsString>) -> Vec<OsString> {
    let subcommands: Vec<String> =
        Cli::command().get_subcommands().map(|s| s.get_name().to_owned()).chain(["help".to_owned()]).collect();
    let mut out = Vec::with_capacity(args.len());
    let mut moved = Vec::new();
    let mut it = args.into_iter();
    if let Some(a0) = it.next() {
        out.push(a0);
    }
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "--" {
            out.push(a);
            break;
        }
        if s == "-n" || s == "--namespace" || s == "--ns" {
            moved.push(a);
            if let Some(v) = it.next() {
                moved.push(v);
            }
            continue;
        }
        if s.starts_with("--namespace=") || s.starts_with("--ns=") || (s.starts_with("-n") && s.len() > 2) {
            moved.push(a);
            continue;
        }
        if GLOBAL_VALUES.contains(&s.as_str()) {
            out.push(a);
            if let Some(v) = it.next() {
                out.push(v);
            }
            continue;
        }
        let is_sub = !s.starts_with('-') && subcommands.contains(&s);
        out.push(a);
        if is_sub {
            out.append(&mut moved);
            break;
        }
    }
    out.extend(it);
    // No subcommand: leave the flags where they were, for clap to explain.
    out.append(&mut moved);
    out
}

impl Cli {
    /// Parses `args` (`args[0]` is the program) the way the binary was started:
    /// as `ktrace`, or as the kubectl plugin (see the module docs).
    pub fn parse_from_argv(args: Vec<OsString>) -> Result<Self, clap::Error> {
        let plugin = args.first().is_some_and(|a| is_plugin(a));
        let args = if plugin { namespace_after_subcommand(args) } else { args };
        let mut cmd = command(plugin);
        let m = cmd.try_get_matches_from_mut(args)?;
        let mut cli = Self::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))?;
        if plugin {
            let _ = PROGRAM.set("kubectl ktrace");
            cli.plugin_defaults();
        }
        Ok(cli)
    }

    /// [`Self::parse_from_argv`] of this process; prints help or the error and exits.
    #[must_use]
    pub fn parse_env() -> Self {
        Self::parse_from_argv(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
    }

    /// As the plugin, live commands read from the cluster's agents.
    fn plugin_defaults(&mut self) {
        let (read, agents) = match &mut self.cmd {
            Command::Dns(a) => (!a.read.is_empty(), &mut a.agents),
            Command::Drops(a) => (!a.read.is_empty(), &mut a.agents),
            Command::Record(a) => (false, &mut a.agents),
            _ => return,
        };
        if !read && !agents.active() {
            agents.agents = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn argv0_decides() {
        assert!(is_plugin(OsStr::new("kubectl-ktrace")));
        assert!(is_plugin(OsStr::new("/home/u/.krew/bin/kubectl-ktrace")));
        assert!(!is_plugin(OsStr::new("/usr/bin/ktrace")));
        assert!(!is_plugin(OsStr::new("kubectl-ktrace-old")));
    }

    #[test]
    fn namespace_moves_behind_the_subcommand() {
        let a = namespace_after_subcommand(argv("kubectl-ktrace -n critical-app --context prod dns --duration 5s"));
        assert_eq!(strs(&a), strs(&argv("kubectl-ktrace --context prod dns -n critical-app --duration 5s")));
        let a = namespace_after_subcommand(argv("kubectl-ktrace --namespace=a -o json drops"));
        assert_eq!(strs(&a), strs(&argv("kubectl-ktrace -o json drops --namespace=a")));
        // A value of a global option is no subcommand.
        let a = namespace_after_subcommand(argv("kubectl-ktrace --context dns -ncritical dns"));
        assert_eq!(strs(&a), strs(&argv("kubectl-ktrace --context dns dns -ncritical")));
        let a = namespace_after_subcommand(argv("kubectl-ktrace dns -n x"));
        assert_eq!(strs(&a), strs(&argv("kubectl-ktrace dns -n x")));
    }

    #[test]
    fn plugin_reads_agents_by_default() {
        let c = Cli::parse_from_argv(argv("/x/kubectl-ktrace -n critical-app dns")).unwrap();
        let Command::Dns(d) = &c.cmd else { panic!("dns") };
        assert!(d.agents.agents, "agents through the API by default");
        assert_eq!(d.scope.namespace.as_deref(), Some("critical-app"));
        let c = Cli::parse_from_argv(argv("kubectl-ktrace dns -r a.pcapng")).unwrap();
        let Command::Dns(d) = &c.cmd else { panic!("dns") };
        assert!(!d.agents.agents, "a capture is read, not the agents");
        let c = Cli::parse_from_argv(argv("kubectl-ktrace drops --agent 10.0.0.1:4247")).unwrap();
        let Command::Drops(d) = &c.cmd else { panic!("drops") };
        assert!(!d.agents.agents);
        let c = Cli::parse_from_argv(argv("ktrace dns")).unwrap();
        let Command::Dns(d) = &c.cmd else { panic!("dns") };
        assert!(!d.agents.agents, "plain ktrace traces this kernel");
    }

    #[test]
    fn plugin_help_and_errors_say_kubectl_ktrace() {
        let e = Cli::parse_from_argv(argv("kubectl-ktrace dns --no-such-flag")).unwrap_err();
        let text = e.render().to_string();
        assert!(text.contains("kubectl ktrace dns"), "{text}");
        let e = Cli::parse_from_argv(argv("kubectl-ktrace --help")).unwrap_err();
        let text = e.render().to_string();
        assert!(text.contains("Usage: kubectl ktrace"), "{text}");
        let e = Cli::parse_from_argv(argv("ktrace dns --no-such-flag")).unwrap_err();
        assert!(!e.render().to_string().contains("kubectl"));
    }
}
