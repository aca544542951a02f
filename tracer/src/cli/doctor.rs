//! `ktrace doctor`: which kernel hooks and which of ktrace's real programs
//! work here, which fallbacks are active, and what that means per command.

use std::io::Write as _;

use crate::bpf::doctor;

use super::{Format, Global};

fn typed(v: impl serde::Serialize, ty: &str) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(v)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("type".into(), ty.into());
    }
    Ok(v)
}

/// Runs `ktrace doctor`. Exit status is an error only if a required hook is missing.
pub fn run(g: &Global) -> anyhow::Result<()> {
    let rep = doctor::run();
    let checks = &rep.checks;
    let mut out = std::io::stdout().lock();
    match g.output {
        Format::Json => {
            for c in checks {
                writeln!(out, "{}", typed(c, "doctor")?)?;
            }
            for p in &rep.programs {
                writeln!(out, "{}", typed(p, "doctor_program")?)?;
            }
            for f in &rep.features {
                writeln!(out, "{}", typed(f, "doctor_feature")?)?;
            }
            let cleanup = serde_json::json!({
                "type": "doctor_tc_cleanup",
                "state_dir": crate::bpf::tc::STATE_DIR,
                "error": rep.tc_cleanup_error,
                "removed_filters": rep.tc_cleanup.as_ref().map(|c| &c.removed_filters),
                "removed_qdiscs": rep.tc_cleanup.as_ref().map(|c| &c.removed_qdiscs),
                "ambiguous_qdiscs": rep.tc_cleanup.as_ref().map(|c| &c.ambiguous_qdiscs),
                "live_filters": rep.tc_cleanup.as_ref().map(|c| &c.live_filters),
            });
            writeln!(out, "{cleanup}")?;
        }
        Format::Table | Format::Wide => {
            let kernel =
                nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
            writeln!(out, "ktrace {} on kernel {kernel}\n", env!("CARGO_PKG_VERSION"))?;
            writeln!(out, "{:<15} {:<6} {:<9} ENABLES / DETAIL", "HOOK", "WORKS", "NEEDED")?;
            for c in checks {
                let path = c.path.as_deref().map(|p| format!(" [path: {p}]")).unwrap_or_default();
                writeln!(
                    out,
                    "{:<15} {:<6} {:<9} {}\n{:<32} {}{path}",
                    c.name,
                    if c.ok { "yes" } else { "NO" },
                    if c.required { "required" } else { "optional" },
                    c.enables,
                    "",
                    c.detail
                )?;
            }
            writeln!(
                out,
                "\n{:<18} {:<36} {:<6} {:<7} {:<13} {:>6}  USED BY / REASON",
                "PROGRAM", "HOOK", "LOADS", "ATTACH", "PATH", "INSNS"
            )?;
            for p in &rep.programs {
                writeln!(
                    out,
                    "{:<18} {:<36} {:<6} {:<7} {:<13} {:>6}  {}",
                    p.name,
                    p.hook,
                    if p.loads { "yes" } else { "NO" },
                    match p.attaches {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "-",
                    },
                    p.path.as_deref().unwrap_or("-"),
                    p.verified_insns.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                    p.used_by
                )?;
                if let Some(r) = &p.reason {
                    writeln!(out, "{:<18} reason: {r}", "")?;
                }
            }
            writeln!(out, "\n{:<8} {:<9} DETAIL", "COMMAND", "WORKS")?;
            for f in &rep.features {
                writeln!(out, "{:<8} {:<9} {}", f.command, f.works, f.detail)?;
            }
            if let Some(c) = &rep.tc_cleanup {
                for f in &c.removed_filters {
                    writeln!(out, "removed a stale ktrace tc filter (its ktrace was killed): {f}")?;
                }
                for q in &c.removed_qdiscs {
                    writeln!(out, "removed the clsact qdisc a killed ktrace had created on {q}")?;
                }
                for q in &c.ambiguous_qdiscs {
                    writeln!(
                        out,
                        "clsact qdisc on {q}: a ktrace crashed while creating it, so it may not be ktrace's; left in \
                         place (`tc qdisc del dev {q} clsact` if nothing uses it)"
                    )?;
                }
            }
            if let Some(e) = &rep.tc_cleanup_error {
                writeln!(out, "could not check for stale ktrace tc filters: {e}")?;
            }
            let missing: Vec<_> = checks.iter().filter(|c| c.required && !c.ok).map(|c| c.name).collect();
            let extras: Vec<_> = checks.iter().filter(|c| !c.required && !c.ok).map(|c| c.name).collect();
            writeln!(out)?;
            if missing.is_empty() {
                writeln!(out, "All hooks ktrace needs work here: dns, drops, record, replay and agent run fully.")?;
            } else {
                writeln!(
                    out,
                    "MISSING required hooks: {} — the features they enable will not work.",
                    missing.join(", ")
                )?;
            }
            if !extras.is_empty() {
                writeln!(out, "Unavailable optional extras: {} — ktrace runs fully without them.", extras.join(", "))?;
            }
        }
    }
    if checks.iter().any(|c| c.required && !c.ok) {
        anyhow::bail!("required kernel hooks are missing (see above)");
    }
    Ok(())
}
