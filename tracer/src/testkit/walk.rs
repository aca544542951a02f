//! The old JSON walkers, kept as references: the typed table text
//! (`output::table::describe_finding`, `output::drops`) and the typed
//! pod filter (`pipeline::Filter::finding`) are tested equal to what these
//! said when the table and the filter walked each record's JSON.

use serde_json::Value;

use crate::{output::table::title, pipeline::Filter};

/// A JSON value as a person reads it: `getent[4242]` for a process,
/// `10.0.0.1:53` for an endpoint, `a, b, c` for a list of names.
#[must_use]
pub fn render(x: &Value) -> String {
    match x {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(render).collect::<Vec<_>>().join(", "),
        Value::Object(m) => {
            if let (Some(c), Some(p)) = (m.get("comm").and_then(Value::as_str), m.get("pid")) {
                return format!("{c}[{p}]");
            }
            if let (Some(ip), Some(port)) = (m.get("ip").and_then(Value::as_str), m.get("port")) {
                return if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
            }
            if let Some(addr) = m.get("address").and_then(Value::as_str) {
                let who = m.get("pod").filter(|p| !p.is_null()).map(render);
                let proc_ = m.get("process").filter(|p| !p.is_null()).map(render);
                return match (who, proc_) {
                    (Some(w), Some(p)) => format!("{w} ({p}) at {addr}"),
                    (Some(w), None) => format!("{w} at {addr}"),
                    (None, Some(p)) => format!("{p} at {addr}"),
                    (None, None) => addr.to_owned(),
                };
            }
            x.to_string()
        }
        other => other.to_string(),
    }
}

/// Plain-language lines for a finding, from its JSON form (what the table
/// printed before findings were typed).
#[must_use]
#[expect(clippy::many_single_char_names, reason = "short-lived closure arguments")]
pub fn describe(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("finding");
    match kind {
        "search_fanout_summary" => return describe_fanout_summary(v),
        "repeated" => return describe_repeated(v),
        _ => {}
    }
    out.push(format!("== {} ==", title(kind)));
    if let Some(c) = v.get("cause").and_then(Value::as_str) {
        out.push(format!("   cause: {c}"));
    }
    let field = |k: &str| v.get(k).filter(|x| !x.is_null()).map(render);
    for k in [
        "pod",
        "process",
        "base_name",
        "answered_by",
        "total_ms",
        "wasted_ms",
        "ndots",
        "search",
        "nameservers",
        "resolv_conf_source",
        "resolver",
        "upstream",
        "qname",
        "attempts_count",
        "waited_ms",
        "client",
        "rate_per_s",
        "top_names",
    ] {
        if k == "attempts" {
            continue;
        }
        if let Some(val) = field(k) {
            out.push(format!("   {k}: {val}"));
        }
    }
    if let Some(a) = v.get("attempts") {
        match a {
            Value::Array(list) => {
                out.push("   attempts:".into());
                for at in list {
                    let q = at.get("qname").and_then(Value::as_str).unwrap_or("?");
                    let t = at.get("qtype").and_then(Value::as_str).unwrap_or("?");
                    let r = at.get("rcode").and_then(Value::as_str).unwrap_or("no answer");
                    let to = at.get("timed_out").and_then(Value::as_bool).unwrap_or(false);
                    let l = at.get("latency_ms").and_then(Value::as_f64).map_or("-".into(), |l| format!("{l:.1} ms"));
                    out.push(format!("     {q:<55} {t:<5} {:<10} {l}", if to { "TIMEOUT" } else { r }));
                }
            }
            other => out.push(format!("   attempts: {other}")),
        }
    }
    advice_lines(v, &mut out);
    out
}

fn advice_lines(v: &Value, out: &mut Vec<String>) {
    if let Some(Value::Array(adv)) = v.get("advice") {
        if adv.is_empty() {
            return;
        }
        out.push("   advice:".into());
        for a in adv {
            if let Some(s) = a.as_str() {
                for (i, line) in s.lines().enumerate() {
                    out.push(format!("     {} {line}", if i == 0 { "-" } else { " " }));
                }
            }
        }
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

/// Fast walks: one sentence, then the (pod, name) groups wasting the most time.
fn describe_fanout_summary(v: &Value) -> Vec<String> {
    let mut out = vec![format!("== {} ==", title("search_fanout_summary"))];
    out.push(format!("   cause: {}", text(v, "cause")));
    if let Some(Value::Array(top)) = v.get("top")
        && !top.is_empty()
    {
        out.push(format!(
            "   {:<36} {:<40} {:>8} {:>7} {:>6} {:>9} {:>9}",
            "POD", "NAME", "LOOKUPS", "EXTRA/L", "SHARE", "WASTE p50", "WASTE p99"
        ));
        for g in top {
            out.push(format!(
                "   {:<36} {:<40} {:>8} {:>7.1} {:>5.1}% {:>7.1}ms {:>7.1}ms",
                text(g, "pod"),
                text(g, "base_name"),
                num(g, "lookups"),
                num(g, "extra_queries_per_lookup"),
                num(g, "share_of_resolver_queries") * 100.0,
                num(g, "wasted_p50_ms"),
                num(g, "wasted_p99_ms"),
            ));
        }
        let more = num(v, "groups") as u64;
        if more > top.len() as u64 {
            out.push(format!("   … {} more pod/name group(s) (all in -o json totals)", more - top.len() as u64));
        }
    }
    advice_lines(v, &mut out);
    out
}

/// Repeats of a cause reported in full earlier: counts and the pods hit.
fn describe_repeated(v: &Value) -> Vec<String> {
    let kind = text(v, "of_kind");
    let mut out = vec![format!(
        "== {} again: {} more (×{} in all, {} pod(s)) ==",
        title(kind),
        num(v, "new") as u64,
        num(v, "count") as u64,
        num(v, "pods") as u64
    )];
    out.push(format!("   cause: {}", text(v, "cause")));
    out.push(format!("   first: {}", text(v, "first_cause")));
    if let Some(Value::Array(top)) = v.get("top_pods") {
        let pods: Vec<String> = top.iter().map(|p| format!("{} ×{}", text(p, "pod"), num(p, "count") as u64)).collect();
        out.push(format!("   top pods: {}", pods.join(", ")));
    }
    out
}

/// Whether a JSON record mentions a pod matching the filter's namespace/pod/node
/// (records that are not typed findings yet: the drops side).
#[must_use]
pub fn json_mentions_pod(filter: &Filter, v: &Value) -> bool {
    {
        let this = filter;
        let mut found = false;
        walk_pods(v, &mut |ns, name, node| {
            let ok_ns = this.namespace.as_deref().is_none_or(|w| w == ns);
            let ok_pod = this.pod.as_deref().is_none_or(|w| match w.split_once('/') {
                Some((a, b)) => a == ns && b == name,
                None => w == name,
            });
            let ok_node = this.node.as_deref().is_none_or(|w| node.is_none() || node == Some(w));
            found |= ok_ns && ok_pod && ok_node;
        });
        found
    }
}

/// Calls `f(namespace, name, node)` for every `{namespace, name}` object in a JSON tree.
fn walk_pods(v: &Value, f: &mut dyn FnMut(&str, &str, Option<&str>)) {
    match v {
        Value::Object(m) => {
            if let (Some(ns), Some(name)) =
                (m.get("namespace").and_then(|x| x.as_str()), m.get("name").and_then(|x| x.as_str()))
            {
                f(ns, name, m.get("node").and_then(|x| x.as_str()));
            }
            // Findings name pods as "namespace/name" strings.
            for (k, x) in m {
                if k.ends_with("pod")
                    && let Some((ns, name)) = x.as_str().and_then(|s| s.split_once('/'))
                {
                    f(ns, name, None);
                }
                walk_pods(x, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk_pods(x, f)),
        _ => {}
    }
}
