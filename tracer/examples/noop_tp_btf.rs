//! A no-op `tp_btf` program on `skb:kfree_skb`, for the in-kernel cost table
//! of `cargo xtask bench` (section 1): the baseline `drop_kfree_skb` is
//! compared with on the same hook. Loads ktrace's own `probe_tp_btf` (`return
//! 0`, the program `ktrace doctor` probes with), attaches it, prints
//! `attached`, and stays until a signal ends it (the link dies with the
//! process) or `SECS` pass (default 600).

#![allow(
    unused_crate_dependencies,
    reason = "an example links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::time::Duration;

use anyhow::Context as _;
use aya::{Btf, EbpfLoader, programs::BtfTracePoint};

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args().nth(1).map_or(Ok(600), |s| s.parse())?.min(3600);
    let mut ebpf = EbpfLoader::new().load(ktrace::bpf::OBJECT).context("loading ktrace's object")?;
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    let p: &mut BtfTracePoint =
        ebpf.program_mut("probe_tp_btf").context("probe_tp_btf missing")?.try_into().context("program type")?;
    p.load("kfree_skb", &btf).context("loading probe_tp_btf")?;
    p.attach().context("attaching probe_tp_btf")?;
    eprintln!("noop_tp_btf: attached");
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}
