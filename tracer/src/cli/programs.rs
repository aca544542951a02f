//! `ktrace programs` (hidden, for `cargo xtask kernels` and bug reports):
//! loads every kernel program as the live commands would, attaches nothing,
//! and prints per program whether the verifier took it and its instruction
//! counts. Exit status is an error if any program was refused.

use std::io::Write as _;

use crate::bpf::programs;

use super::{Format, Global};

/// Runs `ktrace programs`.
pub fn run(g: &Global) -> anyhow::Result<()> {
    let (fit, progs) = programs::report()?;
    let mut out = std::io::stdout().lock();
    match g.output {
        Format::Json => {
            let mut v = serde_json::to_value(&fit)?;
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("type".into(), "fit".into());
            }
            writeln!(out, "{v}")?;
            for p in &progs {
                let mut v = serde_json::to_value(p)?;
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("type".into(), "program".into());
                }
                writeln!(out, "{v}")?;
            }
        }
        Format::Table | Format::Wide => {
            writeln!(
                out,
                "pid source: {}; task reads: {}; netns cookie: {}\n",
                fit.pid_source,
                if fit.task_btf { "BTF pointers" } else { "probe reads" },
                if fit.netns_cookie { "yes" } else { "no" }
            )?;
            writeln!(
                out,
                "{:<18} {:<11} {:<7} {:>7} {:>10}  ERROR",
                "PROGRAM", "TYPE", "LOADED", "INSNS", "PROCESSED"
            )?;
            for p in &progs {
                let n = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                writeln!(
                    out,
                    "{:<18} {:<11} {:<7} {:>7} {:>10}  {}",
                    p.name,
                    p.kind,
                    if p.loaded { "yes" } else { "NO" },
                    n(p.insns),
                    n(p.processed),
                    p.error.as_deref().unwrap_or("")
                )?;
            }
        }
    }
    if progs.iter().any(|p| !p.loaded) {
        anyhow::bail!("the verifier refused some programs (see above)");
    }
    Ok(())
}
