//! `ktrace doctor`: which kernel hooks work here, and what that means.

use std::io::Write as _;

use crate::bpf::doctor;

use super::{Format, Global};

/// Runs `ktrace doctor`. Exit status is an error only if a required hook is missing.
pub fn run(g: &Global) -> anyhow::Result<()> {
    let checks = doctor::run();
    let mut out = std::io::stdout().lock();
    match g.output {
        Format::Json => {
            for c in &checks {
                let mut v = serde_json::to_value(c)?;
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("type".into(), "doctor".into());
                }
                writeln!(out, "{v}")?;
            }
        }
        Format::Table | Format::Wide => {
            let kernel =
                nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
            writeln!(out, "ktrace {} on kernel {kernel}\n", env!("CARGO_PKG_VERSION"))?;
            writeln!(out, "{:<15} {:<6} {:<9} ENABLES / DETAIL", "HOOK", "WORKS", "NEEDED")?;
            for c in &checks {
                writeln!(
                    out,
                    "{:<15} {:<6} {:<9} {}\n{:<32} {}",
                    c.name,
                    if c.ok { "yes" } else { "NO" },
                    if c.required { "required" } else { "optional" },
                    c.enables,
                    "",
                    c.detail
                )?;
            }
            let missing: Vec<_> = checks.iter().filter(|c| c.required && !c.ok).map(|c| c.name).collect();
            let extras: Vec<_> = checks.iter().filter(|c| !c.required && !c.ok).map(|c| c.name).collect();
            writeln!(out)?;
            if missing.is_empty() {
                writeln!(out, "All hooks ktrace needs work here: dns, record and replay run fully.")?;
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
