//! `ktrace replay -r FILE`: every event of one or more captures in time
//! order, decoded and attributed (the `sysdig -r` equivalent), or with
//! `--netstate` the network state each node had when recording started.

use std::{fmt::Write as _, io::Write as _, path::PathBuf, sync::Arc};

use clap::Args;
use serde_json::{Value, json};

use crate::{
    decode::{
        DnsDecoder,
        dns::{qtype_name, rcode_name},
    },
    enrich::{Enricher, PodRef},
    event::Record,
    output::rfc3339,
    source::file::{self, FileEvent},
};

use super::{Format, Global};

/// Arguments of `ktrace replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Captures to read (repeatable; merged by time).
    #[arg(short = 'r', long = "read", value_name = "FILE", required = true)]
    pub read: Vec<PathBuf>,
    /// Print the recorded network state (interfaces, routes, VXLAN, nftables, sysctls) instead of events.
    #[arg(long)]
    pub netstate: bool,
    /// Only events involving pods of this namespace.
    #[arg(short = 'n', long = "ns", visible_alias = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only events involving this pod (`name` or `namespace/name`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only events observed on this node.
    #[arg(long)]
    pub node: Option<String>,
}

fn pod_json(p: Option<&PodRef>) -> Value {
    p.map_or(Value::Null, |p| json!({"namespace": &*p.namespace, "name": &*p.name, "node": p.node.as_deref()}))
}

/// Runs `ktrace replay`.
#[expect(clippy::many_single_char_names, reason = "short-lived closure arguments (p, e, m, d, c)")]
pub fn run(g: &Global, args: &ReplayArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let user_snapshot = g.snapshot()?;
    let enricher = user_snapshot.as_ref().map_or_else(Enricher::empty, Enricher::from_snapshot);
    let mut decoder = DnsDecoder::new();
    let mut evs = Vec::new();
    let mut failed: Option<std::io::Error> = None;
    let mut emit = |out: &mut std::io::StdoutLock<'_>, v: Value, text: String| {
        if failed.is_some() {
            return;
        }
        let r = match g.output {
            Format::Json => writeln!(out, "{v}"),
            Format::Table | Format::Wide => writeln!(out, "{text}"),
        };
        if let Err(e) = r {
            failed = Some(e);
        }
    };
    let pods =
        crate::pipeline::Filter { namespace: args.namespace.clone(), pod: args.pod.clone(), ..Default::default() };
    let pod_ok = |p: Option<&PodRef>| pods.pod_matches(p);
    let pod_filter = pods.is_pod_scoped();
    let warnings = file::replay(&args.read, |ev| match ev {
        FileEvent::NetState { node, state } if args.netstate => {
            for (k, v) in state {
                emit(
                    &mut out,
                    json!({"type": "netstate", "node": node, "name": k, "text": v}),
                    format!("=== {node}: {k} ===\n{v}"),
                );
            }
        }
        FileEvent::Header { path, node, version } => {
            if !args.netstate {
                emit(
                    &mut out,
                    json!({"type": "capture", "path": path.display().to_string(), "node": node, "ktrace_version": version}),
                    format!("# {}: recorded on node {node} by ktrace {version}", path.display()),
                );
            }
        }
        FileEvent::Snapshot(s) => {
            if user_snapshot.is_none() {
                enricher.apply_snapshot(&s);
            }
        }
        FileEvent::NetState { .. } | FileEvent::Coverage { .. } => {}
        FileEvent::Record(_) if args.netstate => {}
        FileEvent::Record(r) => {
            let ts = rfc3339(i128::from(r.ts_ns()));
            match r {
                Record::Packet(p) => {
                    if args.node.as_deref().is_some_and(|n| p.node.as_deref() != Some(n)) {
                        return;
                    }
                    if !crate::decode::is_dns(&p, &[53]) {
                        return;
                    }
                    let p = Arc::new(p);
                    decoder.push(Arc::clone(&p), &mut evs);
                    for mut e in evs.drain(..) {
                        enricher.enrich(&mut e);
                        if pod_filter && !pod_ok(e.src_pod.as_ref()) && !pod_ok(e.dst_pod.as_ref()) {
                            continue;
                        }
                        let m = &e.msg;
                        let proc_ = p.process.as_ref();
                        let v = json!({
                            "type": "packet", "ts": ts, "node": p.node.as_deref(), "hook": p.hook,
                            "pid": proc_.map(|x| x.pid), "comm": proc_.map(|x| x.comm.as_ref()),
                            "netns": p.netns_ino, "cgroup_id": p.cgroup_id,
                            "src": e.src.to_string(), "dst": e.dst.to_string(), "transport": e.transport,
                            "src_pod": pod_json(e.src_pod.as_ref()), "dst_pod": pod_json(e.dst_pod.as_ref()),
                            "dns": {"id": m.id, "response": m.is_response, "qname": m.qname, "qtype": qtype_name(m.qtype),
                                    "rcode": m.is_response.then(|| rcode_name(m.rcode)), "answers": m.ancount},
                        });
                        let who = proc_.map_or("-".into(), |x| format!("{}[{}]", x.comm, x.pid));
                        let text = format!(
                            "{ts} {:<8} {:<14} {:<18} {} -> {} {} {:#06x} {} {} {}",
                            p.node.as_deref().unwrap_or("-"),
                            format!("{:?}", p.hook),
                            who,
                            e.src_pod.as_ref().map_or(e.src.to_string(), |x| format!("{}({x})", e.src)),
                            e.dst_pod.as_ref().map_or(e.dst.to_string(), |x| format!("{}({x})", e.dst)),
                            if m.is_response { "R" } else { "Q" },
                            m.id,
                            m.qname,
                            qtype_name(m.qtype),
                            if m.is_response { rcode_name(m.rcode) } else { String::new() },
                        );
                        emit(&mut out, v, text);
                    }
                }
                Record::Lost { count, node, .. } => {
                    emit(
                        &mut out,
                        json!({"type": "lost", "ts": ts, "node": node.as_deref(), "count": count}),
                        format!("{ts} LOST {count} events"),
                    );
                }
                Record::Drop(d) => {
                    let v = json!({"type": "drop", "ts": ts, "node": d.node.as_deref(), "reason": &*d.reason_name, "ifindex": d.ifindex, "netns": d.netns_ino, "len": d.wire_len, "captured": d.data.len(), "head": d.data.iter().take(24).fold(String::new(), |mut h, b| { let _ = write!(h, "{b:02x}"); h })});
                    emit(
                        &mut out,
                        v,
                        format!(
                            "{ts} DROP {} ifindex={} netns={} len={}",
                            d.reason_name, d.ifindex, d.netns_ino, d.wire_len
                        ),
                    );
                }
                Record::Conn(c) => {
                    let v = json!({"type": "conn", "ts": ts, "node": c.node.as_deref(), "kind": c.kind, "src": c.src.to_string(), "dst": c.dst.to_string(), "pid": c.process.as_ref().map(|p| p.pid), "comm": c.process.as_ref().map(|p| p.comm.as_ref())});
                    emit(&mut out, v, format!("{ts} CONN {:?} {} -> {}", c.kind, c.src, c.dst));
                }
                Record::ResolvConf(rc) => {
                    let v = json!({"type": "resolv_conf", "ts": ts, "pid": rc.pid, "netns": rc.netns_ino, "path": rc.path, "text": rc.text, "error": rc.error});
                    let body = rc.text.clone().or(rc.error.clone()).unwrap_or_default();
                    emit(
                        &mut out,
                        v,
                        format!("{ts} resolv.conf of pid {} ({}):\n{}", rc.pid, rc.path, body.trim_end()),
                    );
                }
            }
        }
    })?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let s = decoder.stats();
    if s.bad_packets + s.bad_dns > 0 {
        eprintln!("note: {} packets and {} DNS payloads could not be decoded", s.bad_packets, s.bad_dns);
    }
    Ok(())
}
