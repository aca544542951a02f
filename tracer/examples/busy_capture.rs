//! Writes the generated busy-node capture of issue 19 (fast search-list walks
//! of 300 pods, a dead upstream, an NXDOMAIN storm, a slow pod):
//! `busy_capture OUT.pcapng`. Prints what it generated as one JSON line.

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

#[path = "../tests/support/busy.rs"]
mod busy;

fn main() -> anyhow::Result<()> {
    let Some(out) = std::env::args().nth(1) else {
        anyhow::bail!("usage: busy_capture OUT.pcapng");
    };
    let g = busy::write(std::path::Path::new(&out))?;
    println!(
        "{{\"queries\":{},\"records\":{},\"fast_walks\":{},\"slow_walks\":{},\"dead_lookups\":{},\"storm_lookups\":{}}}",
        g.queries, g.records, g.fast_walks, g.slow_walks, g.dead_lookups, g.storm_lookups
    );
    Ok(())
}
