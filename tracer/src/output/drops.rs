//! `ktrace drops` output: drop rows, failed connections and fabric findings
//! rendered from their typed values, as table lines or JSON Lines.
//!
//! JSON field order is a public contract (byte-identical to what earlier
//! releases printed): keys in alphabetical order, so each record has a view
//! here that lists its fields in that order, with `type` and the RFC 3339
//! `first_ts`/`last_ts` next to the `_ns` fields they render.

use std::{io::Write, net::IpAddr};

use serde::Serialize;

use crate::{
    analyze::{Finding, Transaction, drops::report::finding_lines},
    event::Endpoint,
    model::drops::{
        ConnFail, ConnFailKind, DropFinding, DropOutput, DropRow, FabricLoss, FlowTuple, OverlayWrongSource,
        ProcessBrief,
    },
    output::{
        fit::{Seg, Style, fit_line},
        rfc3339,
        table::paint_finding_line,
    },
    pipeline::{Context, RunStats, Sink},
};

/// [`FlowTuple`] in JSON.
#[derive(Serialize)]
struct FlowJson<'a> {
    dport: u16,
    dst: &'a IpAddr,
    proto: &'a str,
    sport: u16,
    src: &'a IpAddr,
}

impl<'a> From<&'a FlowTuple> for FlowJson<'a> {
    fn from(f: &'a FlowTuple) -> Self {
        Self { dport: f.dport, dst: &f.dst, proto: f.proto, sport: f.sport, src: &f.src }
    }
}

/// [`ProcessBrief`] in JSON.
#[derive(Serialize)]
struct ProcessJson<'a> {
    comm: &'a str,
    pid: u32,
}

impl<'a> From<&'a ProcessBrief> for ProcessJson<'a> {
    fn from(p: &'a ProcessBrief) -> Self {
        Self { comm: &p.comm, pid: p.pid }
    }
}

/// A `type:"drop"` record.
#[derive(Serialize)]
struct DropJson<'a> {
    background: bool,
    count: u64,
    dev: Option<&'a str>,
    dport: Option<u16>,
    dst: Option<IpAddr>,
    dst_pod: Option<&'a str>,
    first_ts: String,
    first_ts_ns: u64,
    ifindex: u32,
    inner: Option<FlowJson<'a>>,
    last_ts: String,
    last_ts_ns: u64,
    netns: u32,
    netns_pod: Option<&'a str>,
    node: Option<&'a str>,
    outer_dport: Option<u16>,
    outer_dst: Option<IpAddr>,
    outer_proto: Option<&'a str>,
    outer_src: Option<IpAddr>,
    proto: Option<&'a str>,
    reason: &'a str,
    samples: &'a [String],
    sport: Option<u16>,
    src: Option<IpAddr>,
    src_pod: Option<&'a str>,
    #[serde(rename = "type")]
    ty: &'static str,
}

/// A `type:"conn_fail"` record.
#[derive(Serialize)]
struct ConnJson<'a> {
    count: u64,
    #[serde(serialize_with = "display")]
    dst: &'a Endpoint,
    dst_pod: Option<&'a str>,
    first_ts: String,
    first_ts_ns: u64,
    kind: ConnFailKind,
    last_ts: String,
    last_ts_ns: u64,
    node: Option<&'a str>,
    pending: bool,
    process: Option<ProcessJson<'a>>,
    src: &'a IpAddr,
    src_pod: Option<&'a str>,
    syn_retransmits: u64,
    #[serde(rename = "type")]
    ty: &'static str,
}

/// A `type:"finding", kind:"fabric_loss"` record.
#[derive(Serialize)]
struct FabricLossJson<'a> {
    advice: &'a [String],
    cause: &'a str,
    delivered: u64,
    dport: u16,
    encapsulation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_ts: Option<String>,
    first_ts_ns: u64,
    from_node: &'a str,
    inner_dport: u16,
    inner_dst: &'a IpAddr,
    inner_dst_pod: Option<&'a str>,
    inner_proto: &'a str,
    inner_src: &'a IpAddr,
    inner_src_pod: Option<&'a str>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_ts: Option<String>,
    last_ts_ns: u64,
    outer_dst: &'a IpAddr,
    outer_src: &'a IpAddr,
    packets: u64,
    proto: &'a str,
    to_node: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
}

/// A `type:"finding", kind:"overlay_wrong_source"` record.
#[derive(Serialize)]
struct OverlayJson<'a> {
    advice: &'a [String],
    cause: &'a str,
    dport: u16,
    expected: &'a [IpAddr],
    #[serde(skip_serializing_if = "Option::is_none")]
    first_ts: Option<String>,
    first_ts_ns: u64,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_ts: Option<String>,
    last_ts_ns: u64,
    node: &'a str,
    outer_dst: &'a IpAddr,
    outer_src: &'a IpAddr,
    packets: u64,
    to_node: Option<&'a str>,
    #[serde(rename = "type")]
    ty: &'static str,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ts(ns: u64) -> String {
    rfc3339(i128::from(ns))
}

fn drop_json(d: &DropRow) -> DropJson<'_> {
    DropJson {
        background: d.background,
        count: d.count,
        dev: d.dev.as_deref(),
        dport: d.dport,
        dst: d.dst,
        dst_pod: d.dst_pod.as_deref(),
        first_ts: ts(d.first_ts_ns),
        first_ts_ns: d.first_ts_ns,
        ifindex: d.ifindex,
        inner: d.inner.as_ref().map(FlowJson::from),
        last_ts: ts(d.last_ts_ns),
        last_ts_ns: d.last_ts_ns,
        netns: d.netns,
        netns_pod: d.netns_pod.as_deref(),
        node: d.node.as_deref(),
        outer_dport: d.outer_dport,
        outer_dst: d.outer_dst,
        outer_proto: d.outer_proto,
        outer_src: d.outer_src,
        proto: d.proto,
        reason: &d.reason,
        samples: &d.samples,
        sport: d.sport,
        src: d.src,
        src_pod: d.src_pod.as_deref(),
        ty: "drop",
    }
}

fn conn_json(c: &ConnFail) -> ConnJson<'_> {
    ConnJson {
        count: c.count,
        dst: &c.dst,
        dst_pod: c.dst_pod.as_deref(),
        first_ts: ts(c.first_ts_ns),
        first_ts_ns: c.first_ts_ns,
        kind: c.kind,
        last_ts: ts(c.last_ts_ns),
        last_ts_ns: c.last_ts_ns,
        node: c.node.as_deref(),
        pending: c.pending,
        process: c.process.as_ref().map(ProcessJson::from),
        src: &c.src,
        src_pod: c.src_pod.as_deref(),
        syn_retransmits: c.syn_retransmits,
        ty: "conn_fail",
    }
}

fn fabric_json(l: &FabricLoss, times: bool) -> FabricLossJson<'_> {
    FabricLossJson {
        advice: &l.advice,
        cause: &l.cause,
        delivered: l.delivered,
        dport: l.dport,
        encapsulation: l.encapsulation,
        first_ts: times.then(|| ts(l.first_ts_ns)),
        first_ts_ns: l.first_ts_ns,
        from_node: &l.from_node,
        inner_dport: l.inner_dport,
        inner_dst: &l.inner_dst,
        inner_dst_pod: l.inner_dst_pod.as_deref(),
        inner_proto: l.inner_proto,
        inner_src: &l.inner_src,
        inner_src_pod: l.inner_src_pod.as_deref(),
        kind: "fabric_loss",
        last_ts: times.then(|| ts(l.last_ts_ns)),
        last_ts_ns: l.last_ts_ns,
        outer_dst: &l.outer_dst,
        outer_src: &l.outer_src,
        packets: l.packets,
        proto: l.proto,
        to_node: &l.to_node,
        ty: "finding",
    }
}

fn overlay_json(o: &OverlayWrongSource, times: bool) -> OverlayJson<'_> {
    OverlayJson {
        advice: &o.advice,
        cause: &o.cause,
        dport: o.dport,
        expected: &o.expected,
        first_ts: times.then(|| ts(o.first_ts_ns)),
        first_ts_ns: o.first_ts_ns,
        kind: "overlay_wrong_source",
        last_ts: times.then(|| ts(o.last_ts_ns)),
        last_ts_ns: o.last_ts_ns,
        node: &o.node,
        outer_dst: &o.outer_dst,
        outer_src: &o.outer_src,
        packets: o.packets,
        to_node: o.to_node.as_deref(),
        ty: "finding",
    }
}

/// A finding as one JSON line; with `times`, the RFC 3339 `first_ts` and
/// `last_ts` too (`ktrace drops` prints them; the agent's stream does not).
///
/// # Errors
/// Serialisation (does not happen for these types).
pub fn finding_json(f: &DropFinding, times: bool) -> serde_json::Result<String> {
    match f {
        DropFinding::FabricLoss(l) => serde_json::to_string(&fabric_json(l, times)),
        DropFinding::OverlayWrongSource(o) => serde_json::to_string(&overlay_json(o, times)),
    }
}

/// A drops result as the JSON line `ktrace drops -o json` prints.
///
/// # Errors
/// Serialisation (does not happen for these types).
pub fn output_json(r: &DropOutput) -> serde_json::Result<String> {
    match r {
        DropOutput::Drop(d) => serde_json::to_string(&drop_json(d)),
        DropOutput::Conn(c) => serde_json::to_string(&conn_json(c)),
        DropOutput::Finding(f) => finding_json(f, true),
    }
}

/// The closing `type:"stats"` record of `ktrace drops -o json`.
#[derive(Debug, Serialize)]
pub struct DropsStatsJson<'a> {
    /// Nodes whose captures hold no underlay fingerprints (file input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes_without_underlay: Option<Vec<&'a str>>,
    /// Records printed.
    pub shown: usize,
    /// Always `stats`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Underlay fingerprint records read (file input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub underlay_fingerprints: Option<u64>,
    /// Underlay packets the analysis saw.
    pub underlay_packets: u64,
    /// Warnings.
    pub warnings: &'a [String],
}

/// A kernel drop as one line: the full line of old for pipes and `-o wide`;
/// on a terminal the device, then the node, then the inner packet are left
/// out and pod names shortened in the middle until it fits.
#[must_use]
pub fn drop_line(d: &DropRow, width: Option<usize>, colour: bool) -> String {
    let tag = if colour { Style::Bad.paint("DROP") } else { "DROP".to_owned() };
    let or_dash = |x: Option<String>| x.unwrap_or_else(|| "-".into());
    let src = or_dash(d.src.map(|a| a.to_string()));
    let dst = or_dash(d.dst.map(|a| a.to_string()));
    let inner = d
        .inner
        .as_ref()
        .and_then(|i| serde_json::to_string(&FlowJson::from(i)).ok())
        .map_or(String::new(), |i| format!("  inner: {i}"));
    fit_line(
        vec![
            Seg::fixed(format!("{tag}  {:<22} x{:<5} {} ", &*d.reason, d.count, d.proto.unwrap_or("-"))),
            Seg::name(d.src_pod.clone().unwrap_or(src), 16),
            Seg::fixed(" -> "),
            Seg::name(d.dst_pod.clone().unwrap_or_else(|| dst.clone()), 16),
            Seg::fixed(format!(" {dst}:{}", or_dash(d.dport.map(|p| p.to_string())))),
            Seg::optional(format!("  node={}", d.node.as_deref().unwrap_or("-")), 2),
            Seg::optional(format!(" dev={}", d.dev.as_deref().unwrap_or("-")), 1),
            Seg::optional(inner, 1),
        ],
        width.map(|w| w + tag.len() - 4),
    )
}

/// A failed connection as one line (see [`drop_line`]).
#[must_use]
pub fn conn_line(c: &ConnFail, width: Option<usize>, colour: bool) -> String {
    let tag = if colour { Style::Bad.paint("CONN") } else { "CONN".to_owned() };
    // No process prints as `-[-]`, as it always has.
    let process = c.process.as_ref().map_or_else(|| "-[-]".to_owned(), |p| format!("{}[{}]", p.comm, p.pid));
    fit_line(
        vec![
            Seg::fixed(format!("{tag}  {:<22} x{:<5} ", c.kind.as_str(), c.count)),
            Seg::name(c.src_pod.clone().unwrap_or_else(|| c.src.to_string()), 16),
            Seg::fixed(" -> "),
            Seg::name(c.dst.to_string(), 16),
            Seg::optional(format!("  process={process}"), 2),
            Seg::optional(format!(" node={}", c.node.as_deref().unwrap_or("-")), 1),
        ],
        width.map(|w| w + tag.len() - 4),
    )
}

/// How [`DropsSink`] prints.
#[derive(Clone, Copy, Debug)]
pub enum DropsFormat {
    /// JSON Lines.
    Json,
    /// Table lines fitted to `width`, in colour when `colour`.
    Table {
        /// Terminal width (None: do not fit).
        width: Option<usize>,
        /// Paint tags and titles.
        colour: bool,
    },
}

/// The sink of `ktrace drops`: prints each drops result as it comes, hiding
/// background drops unless `all`.
pub struct DropsSink<W: Write> {
    out: W,
    format: DropsFormat,
    all: bool,
    /// Results printed.
    pub shown: usize,
    /// The first write error (output stops there).
    pub error: Option<std::io::Error>,
}

impl<W: Write> DropsSink<W> {
    /// A sink printing to `out`.
    #[must_use]
    pub fn new(out: W, format: DropsFormat, all: bool) -> Self {
        Self { out, format, all, shown: 0, error: None }
    }

    /// The writer, for the closing lines.
    pub fn out(&mut self) -> &mut W {
        &mut self.out
    }

    fn write(&mut self, r: &DropOutput) -> std::io::Result<()> {
        match self.format {
            DropsFormat::Json => writeln!(self.out, "{}", output_json(r)?),
            DropsFormat::Table { width, colour } => match r {
                DropOutput::Drop(d) => writeln!(self.out, "{}", drop_line(d, width, colour)),
                DropOutput::Conn(c) => writeln!(self.out, "{}", conn_line(c, width, colour)),
                DropOutput::Finding(f) => {
                    writeln!(self.out)?;
                    for l in finding_lines(f) {
                        writeln!(self.out, "{}", paint_finding_line(&l, colour))?;
                    }
                    Ok(())
                }
            },
        }
    }
}

impl<W: Write> Sink for DropsSink<W> {
    fn transaction(&mut self, _ctx: &Context, _tx: &Transaction) {}

    fn finding(&mut self, _ctx: &Context, _f: &Finding) {}

    fn finish(&mut self, _ctx: &Context, _stats: &RunStats) {}

    fn drop_output(&mut self, _ctx: &Context, r: &DropOutput) {
        if !self.all && matches!(r, DropOutput::Drop(d) if d.background) {
            return;
        }
        if self.error.is_some() {
            return;
        }
        self.shown += 1;
        if let Err(e) = self.write(r) {
            self.error = Some(e);
        }
    }

    fn flush_output(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, sync::Arc};

    use serde_json::Value;

    use super::*;

    /// What `ktrace drops` printed before the typed views: the record's
    /// serde form through `serde_json::Value` (sorted keys), `type` added,
    /// `first_ts`/`last_ts` rendered.
    fn old_json(r: &DropOutput) -> String {
        let mut v = match r {
            DropOutput::Drop(d) => serde_json::to_value(d),
            DropOutput::Conn(c) => serde_json::to_value(c),
            DropOutput::Finding(f) => serde_json::to_value(f),
        }
        .unwrap();
        if let Value::Object(m) = &mut v {
            m.insert("type".into(), Value::String(r.type_name().into()));
            for k in ["first_ts_ns", "last_ts_ns"] {
                if let Some(ns) = m.get(k).and_then(Value::as_u64) {
                    m.insert(k.trim_end_matches("_ns").to_owned(), Value::String(rfc3339(i128::from(ns))));
                }
            }
        }
        v.to_string()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn drop_row(vxlan: bool) -> DropRow {
        DropRow {
            reason: Arc::from("NETFILTER_DROP"),
            count: 3,
            src: Some(ip("10.244.1.20")),
            dst: vxlan.then(|| ip("fd00::2")),
            proto: Some("tcp"),
            sport: Some(51_000),
            dport: vxlan.then_some(8080),
            src_pod: Some("a/client".into()),
            dst_pod: None,
            node: vxlan.then(|| Arc::from("node-b")),
            ifindex: 3,
            dev: None,
            netns: 4_026_532_001,
            netns_pod: vxlan.then(|| "a/x".into()),
            first_ts_ns: 1_765_000_000_123_456_789,
            last_ts_ns: 1_765_000_001_000_000_000,
            samples: vec!["+0.000ms tcp \"quoted\" \\ é".into()],
            inner: vxlan.then(|| FlowTuple {
                src: ip("10.244.1.20"),
                dst: ip("10.244.2.30"),
                proto: "tcp",
                sport: 1,
                dport: 2,
            }),
            outer_src: vxlan.then(|| ip("192.168.77.10")),
            outer_dst: vxlan.then(|| ip("192.168.77.11")),
            outer_proto: vxlan.then_some("udp"),
            outer_dport: vxlan.then_some(4789),
            background: !vxlan,
        }
    }

    fn conn(process: bool) -> ConnFail {
        ConnFail {
            kind: if process { ConnFailKind::Refused } else { ConnFailKind::Timeout },
            src: ip("10.244.1.20"),
            dst: Endpoint { ip: ip("fd00::1"), port: 443 },
            src_pod: process.then(|| "a/client".into()),
            dst_pod: None,
            process: process.then(|| ProcessBrief { pid: 42, comm: "curl".into() }),
            count: 2,
            syn_retransmits: 5,
            node: Some(Arc::from("node-a")),
            first_ts_ns: 5,
            last_ts_ns: 7,
            pending: !process,
        }
    }

    fn findings() -> Vec<DropFinding> {
        vec![
            DropFinding::FabricLoss(FabricLoss {
                from_node: Arc::from("node-a"),
                to_node: Arc::from("node-b"),
                packets: 300,
                delivered: 0,
                proto: "udp",
                dport: 4789,
                outer_src: ip("192.168.77.10"),
                outer_dst: ip("192.168.77.11"),
                encapsulation: Some("vxlan"),
                inner_src: ip("10.244.1.20"),
                inner_dst: ip("10.244.2.30"),
                inner_src_pod: Some("a/client".into()),
                inner_dst_pod: None,
                inner_proto: "tcp",
                inner_dport: 8080,
                first_ts_ns: 1,
                last_ts_ns: 2,
                cause: "lost".into(),
                advice: vec!["one".into(), "two\nlines".into()],
            }),
            DropFinding::OverlayWrongSource(OverlayWrongSource {
                node: Arc::from("node-b"),
                outer_src: ip("10.0.0.99"),
                expected: vec![ip("192.168.77.11"), ip("fd00::11")],
                outer_dst: ip("192.168.77.10"),
                to_node: None,
                dport: 4789,
                packets: 20,
                first_ts_ns: 0,
                last_ts_ns: 19_000_000,
                cause: "wrong".into(),
                advice: vec![],
            }),
        ]
    }

    #[test]
    fn typed_json_is_what_the_value_walk_printed() {
        let mut all: Vec<DropOutput> = vec![
            DropOutput::Drop(drop_row(true)),
            DropOutput::Drop(drop_row(false)),
            DropOutput::Conn(conn(true)),
            DropOutput::Conn(conn(false)),
        ];
        all.extend(findings().into_iter().map(DropOutput::Finding));
        for r in &all {
            assert_eq!(output_json(r).unwrap(), old_json(r), "{r:?}");
        }
        // The agent's finding stream: no RFC 3339 times.
        for f in findings() {
            let mut v = serde_json::to_value(&f).unwrap();
            if let Value::Object(m) = &mut v {
                m.insert("type".into(), "finding".into());
            }
            assert_eq!(finding_json(&f, false).unwrap(), v.to_string());
        }
    }

    #[test]
    fn stats_record_keeps_its_order() {
        let w = vec!["w".to_owned()];
        let s = DropsStatsJson {
            nodes_without_underlay: Some(vec!["node-b"]),
            shown: 3,
            ty: "stats",
            underlay_fingerprints: Some(0),
            underlay_packets: 9,
            warnings: &w,
        };
        let old = serde_json::json!({
            "type": "stats", "shown": 3, "warnings": w, "underlay_packets": 9,
            "underlay_fingerprints": 0, "nodes_without_underlay": ["node-b"],
        });
        assert_eq!(serde_json::to_string(&s).unwrap(), old.to_string());
        let s = DropsStatsJson { nodes_without_underlay: None, underlay_fingerprints: None, ..s };
        let old = serde_json::json!({"type": "stats", "shown": 3, "warnings": w, "underlay_packets": 9});
        assert_eq!(serde_json::to_string(&s).unwrap(), old.to_string());
    }

    fn s(v: &Value, k: &str) -> String {
        match v.get(k) {
            None | Some(Value::Null) => "-".into(),
            Some(Value::String(x)) => x.clone(),
            Some(x) => x.to_string(),
        }
    }

    fn pod_or(v: &Value, pod: &str, addr: &str) -> String {
        match v.get(pod).and_then(Value::as_str) {
            Some(p) => p.to_owned(),
            None => s(v, addr),
        }
    }

    /// The table line of old, from the JSON form.
    fn old_line(v: &Value, width: Option<usize>, colour: bool) -> String {
        if v["type"] == "drop" {
            let tag = if colour { Style::Bad.paint("DROP") } else { "DROP".to_owned() };
            fit_line(
                vec![
                    Seg::fixed(format!(
                        "{tag}  {:<22} x{:<5} {} ",
                        s(v, "reason"),
                        v.get("count").and_then(Value::as_u64).unwrap_or(0),
                        s(v, "proto")
                    )),
                    Seg::name(pod_or(v, "src_pod", "src"), 16),
                    Seg::fixed(" -> "),
                    Seg::name(pod_or(v, "dst_pod", "dst"), 16),
                    Seg::fixed(format!(" {}:{}", s(v, "dst"), s(v, "dport"))),
                    Seg::optional(format!("  node={}", s(v, "node")), 2),
                    Seg::optional(format!(" dev={}", s(v, "dev")), 1),
                    Seg::optional(
                        v.get("inner").filter(|x| !x.is_null()).map_or(String::new(), |i| format!("  inner: {i}")),
                        1,
                    ),
                ],
                width.map(|w| w + tag.len() - 4),
            )
        } else {
            let tag = if colour { Style::Bad.paint("CONN") } else { "CONN".to_owned() };
            fit_line(
                vec![
                    Seg::fixed(format!(
                        "{tag}  {:<22} x{:<5} ",
                        s(v, "kind"),
                        v.get("count").and_then(Value::as_u64).unwrap_or(0)
                    )),
                    Seg::name(pod_or(v, "src_pod", "src"), 16),
                    Seg::fixed(" -> "),
                    Seg::name(s(v, "dst"), 16),
                    Seg::optional(
                        format!(
                            "  process={}",
                            v.get("process").map_or("-".into(), |p| format!("{}[{}]", s(p, "comm"), s(p, "pid")))
                        ),
                        2,
                    ),
                    Seg::optional(format!(" node={}", s(v, "node")), 1),
                ],
                width.map(|w| w + tag.len() - 4),
            )
        }
    }

    #[test]
    fn typed_table_lines_are_the_old_lines() {
        let rows = [
            DropOutput::Drop(drop_row(true)),
            DropOutput::Drop(drop_row(false)),
            DropOutput::Conn(conn(true)),
            DropOutput::Conn(conn(false)),
        ];
        for r in &rows {
            let v: Value = serde_json::from_str(&old_json(r)).unwrap();
            for width in [None, Some(40), Some(80), Some(200)] {
                for colour in [false, true] {
                    let new = match r {
                        DropOutput::Drop(d) => drop_line(d, width, colour),
                        DropOutput::Conn(c) => conn_line(c, width, colour),
                        DropOutput::Finding(_) => unreachable!(),
                    };
                    assert_eq!(new, old_line(&v, width, colour), "{r:?} {width:?}");
                }
            }
        }
    }

    #[test]
    fn typed_finding_lines_are_the_old_description() {
        for f in findings() {
            let v: Value = serde_json::from_str(&old_json(&DropOutput::Finding(f.clone()))).unwrap();
            assert_eq!(finding_lines(&f), crate::testkit::walk::describe(&v));
        }
    }

    #[test]
    fn table_lines_of_missing_fields() {
        let l = conn_line(&conn(false), None, false);
        assert!(l.contains("process=-[-]") && l.contains("timeout"), "{l}");
        let l = drop_line(&drop_row(false), None, false);
        assert!(l.contains(" -:-") && l.contains("node=-") && !l.contains("inner:"), "{l}");
        let l = drop_line(&drop_row(true), None, false);
        assert!(
            l.contains(r#"inner: {"dport":2,"dst":"10.244.2.30","proto":"tcp","sport":1,"src":"10.244.1.20"}"#),
            "{l}"
        );
    }
}
