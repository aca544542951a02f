//! `ktrace completions SHELL` and `ktrace man`: shell completion scripts and
//! manual pages generated from the clap definitions the parser itself uses,
//! so they never disagree with the binary that prints them.

use std::{io::Write, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};

use super::Cli;

/// Arguments of `ktrace completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `ktrace man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `ktrace.1` and `ktrace-SUBCOMMAND.1` into this directory instead
    /// of printing `ktrace.1`.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Writes the completion script for `shell` (for the program name `ktrace`).
pub fn completions(args: &CompletionsArgs, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "ktrace", out);
}

/// Prints `ktrace.1`, or writes every page into `--out-dir`.
pub fn man(args: &ManArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match &args.out_dir {
        None => clap_mangen::Man::new(cmd).render(out).context("rendering ktrace.1"),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing manual pages to {}", dir.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: clap_complete::Shell) -> String {
        let mut out = Vec::new();
        completions(&CompletionsArgs { shell }, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completions_name_every_subcommand_and_flag() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let s = script(shell);
            for word in ["dns", "drops", "record", "replay", "doctor", "agent", "explain-first", "kube-snapshot"] {
                assert!(s.contains(word), "{shell:?} completion lacks {word}");
            }
        }
        // The value enum of -o is completed as values.
        assert!(script(clap_complete::Shell::Fish).contains("wide"));
    }

    #[test]
    fn man_pages_cover_subcommands() {
        let mut page = Vec::new();
        man(&ManArgs { out_dir: None }, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie"), "roff: {}", &page[..40.min(page.len())]);
        assert!(page.contains(".TH ktrace 1"));
        assert!(page.contains("ktrace\\-dns(1)") || page.contains("dns"), "subcommands listed");
        let dir = std::env::temp_dir().join(format!("ktrace-man-{}", std::process::id()));
        man(&ManArgs { out_dir: Some(dir.clone()) }, &mut Vec::new()).unwrap();
        for p in ["ktrace.1", "ktrace-dns.1", "ktrace-drops.1", "ktrace-record.1", "ktrace-replay.1"] {
            let text = std::fs::read_to_string(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert!(text.contains(".SH OPTIONS") || text.contains(".SH NAME"), "{p}");
        }
        let dns = std::fs::read_to_string(dir.join("ktrace-dns.1")).unwrap();
        assert!(dns.contains("explain\\-first"), "dns page names its flags");
        let _ = std::fs::remove_dir_all(dir);
    }
}
