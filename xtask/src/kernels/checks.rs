//! Judges what the scenario (scenario.sh) printed on one kernel: the same
//! code for every guest and for the host.

use std::collections::BTreeMap;

use serde_json::Value;

/// What the scenario printed: blocks by name and notes by key.
#[derive(Debug, Default)]
pub(crate) struct Output {
    blocks: BTreeMap<String, (String, Option<i32>)>,
    notes: BTreeMap<String, Vec<String>>,
    /// The scenario reached its end (`@@KT note done`).
    pub(crate) complete: bool,
}

impl Output {
    /// Parses `@@KT` lines; anything outside a block is ignored.
    pub(crate) fn parse(text: &str) -> Self {
        let mut o = Self::default();
        let mut cur: Option<(String, String)> = None;
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r');
            if let Some(rest) = line.strip_prefix("@@KT ") {
                let mut w = rest.split_whitespace();
                match (w.next(), w.next()) {
                    (Some("begin"), Some(name)) => cur = Some((name.to_owned(), String::new())),
                    (Some("end"), Some(name)) => {
                        let rc = w.next().and_then(|r| r.strip_prefix("rc=")).and_then(|r| r.parse().ok());
                        if let Some((n, body)) = cur.take()
                            && n == name
                        {
                            o.blocks.insert(n, (body, rc));
                        }
                    }
                    (Some("note"), Some(key)) => {
                        if key == "done" {
                            o.complete = true;
                        }
                        o.notes.insert(key.to_owned(), w.map(str::to_owned).collect());
                    }
                    _ => {}
                }
                continue;
            }
            if let Some((_, body)) = cur.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        o
    }

    fn text(&self, name: &str) -> &str {
        self.blocks.get(name).map_or("", |(b, _)| b.as_str())
    }

    fn rc(&self, name: &str) -> Option<i32> {
        self.blocks.get(&format!("{name}.out")).and_then(|(_, rc)| *rc)
    }

    fn json(&self, name: &str) -> Vec<Value> {
        self.text(name).lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn note(&self, key: &str) -> Option<&[String]> {
        self.notes.get(key).map(Vec::as_slice)
    }

    /// Seconds the scenario itself ran (without boot or waiting for the host lock).
    pub(crate) fn scenario_seconds(&self) -> Option<f64> {
        let at = |k: &str| self.note(k).and_then(|v| v.first()).and_then(|s| s.parse::<f64>().ok());
        Some(at("done")? - at("began")?)
    }

    /// The `uname -r` the scenario reported.
    pub(crate) fn kernel(&self) -> Option<&str> {
        self.note("kernel").and_then(|v| v.first()).map(String::as_str)
    }
}

/// One check's verdict.
#[derive(Clone, Debug)]
pub(crate) struct Verdict {
    pub(crate) name: &'static str,
    pub(crate) pass: bool,
    /// Why it failed, or what it saw.
    pub(crate) detail: String,
}

/// One program's figures on one kernel.
#[derive(Clone, Debug)]
pub(crate) struct ProgramFigures {
    pub(crate) name: String,
    pub(crate) loaded: bool,
    pub(crate) insns: Option<u64>,
    pub(crate) processed: Option<u64>,
    pub(crate) error: Option<String>,
}

impl ProgramFigures {
    /// One `program` record of `ktrace programs -o json`.
    fn from_json(p: &Value) -> Self {
        Self {
            name: p["name"].as_str().unwrap_or("?").to_owned(),
            loaded: p["loaded"] == true,
            insns: p["insns"].as_u64(),
            processed: p["processed"].as_u64(),
            error: p["error"].as_str().map(str::to_owned),
        }
    }
}

/// Everything judged on one kernel.
#[derive(Clone, Debug, Default)]
pub(crate) struct KernelResult {
    pub(crate) verdicts: Vec<Verdict>,
    pub(crate) programs: Vec<ProgramFigures>,
    /// The same programs loaded with `--bpf-log` (kernel debug logs on).
    pub(crate) programs_log: Vec<ProgramFigures>,
    /// Load-time choices (`pid_source`, `task_btf`, `netns_cookie`) and optional hooks.
    pub(crate) facts: Vec<(String, String)>,
    /// Extra observations (what a SIGKILL left behind until the restart).
    pub(crate) notes: Vec<String>,
    /// Seconds the scenario ran.
    pub(crate) scenario_seconds: Option<f64>,
}

impl KernelResult {
    pub(crate) fn passed(&self) -> bool {
        !self.verdicts.is_empty() && self.verdicts.iter().all(|v| v.pass)
    }
}

/// One line, at most 400 characters, keeping the end (where a verifier log says why).
fn one_line(s: &str) -> String {
    let flat: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(';')).collect();
    let flat = flat.join(" / ");
    let n = flat.chars().count();
    if n <= 400 { flat } else { format!("…{}", flat.chars().skip(n - 400).collect::<String>()) }
}

fn verdict(name: &'static str, r: Result<String, String>) -> Verdict {
    match r {
        Ok(detail) => Verdict { name, pass: true, detail: one_line(&detail) },
        Err(detail) => Verdict { name, pass: false, detail: one_line(&detail) },
    }
}

fn stderr_tail(o: &Output, name: &str) -> String {
    let err = o.text(&format!("{name}.err"));
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// The check names, in report order.
pub(crate) const CHECKS: [&str; 7] = ["doctor", "programs", "bpf_log", "dns", "drops", "underlay", "restart"];

/// Whether every program of one `ktrace programs` run (`name`.out) loaded;
/// `with` names the variant in the message.
fn judge_loads(o: &Output, name: &str, programs: &[ProgramFigures], with: &str) -> Result<String, String> {
    let refused: Vec<String> = programs
        .iter()
        .filter(|p| !p.loaded)
        .map(|p| format!("{}: {}", p.name, p.error.as_deref().unwrap_or("?")))
        .collect();
    if programs.is_empty() {
        Err(format!("no output: {}", stderr_tail(o, name)))
    } else if refused.is_empty() {
        Ok(format!("{} programs loaded{with}", programs.len()))
    } else {
        Err(format!("refused{with}: {}", refused.join("; ")))
    }
}

/// Judges one kernel's scenario output.
pub(crate) fn judge(o: &Output) -> KernelResult {
    let mut r = KernelResult { scenario_seconds: o.scenario_seconds(), ..KernelResult::default() };
    let doctor = o.json("doctor.out");
    let missing: Vec<String> = doctor
        .iter()
        .filter(|c| c["required"] == true && c["ok"] == false)
        .map(|c| format!("{}: {}", c["name"].as_str().unwrap_or("?"), c["detail"].as_str().unwrap_or("")))
        .collect();
    r.verdicts.push(verdict(
        "doctor",
        if doctor.is_empty() {
            Err(format!("no output: {}", stderr_tail(o, "doctor")))
        } else if missing.is_empty() && o.rc("doctor") == Some(0) {
            Ok(format!("{} hooks checked", doctor.len()))
        } else {
            Err(format!("required hooks missing: {}", missing.join("; ")))
        },
    ));
    for c in &doctor {
        if let Some(name @ ("kprobe" | "fentry" | "task_btf" | "netns_cookie" | "tc")) = c["name"].as_str() {
            r.facts.push((name.to_owned(), if c["ok"] == true { "yes".into() } else { "no".into() }));
        }
    }
    // Which attribution path the DNS programs took: per socket (sk_storage) or per packet.
    if let Some(d) = doctor.iter().find(|c| c["type"] == "doctor_feature" && c["command"] == "dns")
        && let Some(detail) = d["detail"].as_str()
    {
        let path = if detail.contains("attribution: per socket") {
            "socket"
        } else if detail.contains("attribution: per packet") {
            "packet"
        } else {
            "?"
        };
        r.facts.push(("attribution".to_owned(), path.into()));
    }

    let progs = o.json("programs.out");
    for p in &progs {
        if p["type"] == "fit" {
            for k in ["pid_source", "task_btf", "netns_cookie"] {
                let v = &p[k];
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                r.facts.push((format!("load.{k}"), v));
            }
            if let Some(h) = p["cgroup_skb_helpers"].as_object() {
                let no: Vec<&str> = h.iter().filter(|(_, v)| **v == false).map(|(k, _)| k.as_str()).collect();
                r.notes.push(format!(
                    "helpers cgroup_skb may not call here: {}",
                    if no.is_empty() { "none".into() } else { no.join(", ") }
                ));
            }
        } else if p["type"] == "program" {
            r.programs.push(ProgramFigures::from_json(p));
        }
    }
    r.verdicts.push(verdict("programs", judge_loads(o, "programs", &r.programs, "")));
    for p in o.json("programs_log.out").iter().filter(|p| p["type"] == "program") {
        r.programs_log.push(ProgramFigures::from_json(p));
    }
    r.verdicts.push(verdict("bpf_log", judge_loads(o, "programs_log", &r.programs_log, " with --bpf-log")));
    r.verdicts.push(verdict("dns", judge_dns(o)));
    r.verdicts.push(verdict("drops", judge_drops(o)));
    r.verdicts.push(verdict("underlay", judge_underlay(o)));
    let (restart, notes) = judge_restart(o);
    r.verdicts.push(verdict("restart", restart));
    r.notes.extend(notes);
    if !o.complete {
        r.verdicts.push(Verdict {
            name: "complete",
            pass: false,
            detail: "the scenario did not reach its end (guest timeout or crash)".into(),
        });
    }
    r
}

fn judge_dns(o: &Output) -> Result<String, String> {
    let pid: Option<u64> = o.note("dig_pid").and_then(|v| v.first()).and_then(|p| p.parse().ok());
    let txs = o.json("dns.out");
    let t = txs
        .iter()
        .find(|t| t["type"] == "dns" && t["qname"] == "example.test" && t["server"] == "10.253.7.1:53")
        .ok_or_else(|| format!("no example.test transaction ({} records; {})", txs.len(), stderr_tail(o, "dns")))?;
    let lat = t["latency_ms"].as_f64().unwrap_or(0.0);
    if t["comm"] != "dig" {
        return Err(format!("comm {} (want dig): {t}", t["comm"]));
    }
    if pid.is_some() && t["pid"].as_u64() != pid {
        return Err(format!("pid {} (want dig's {pid:?}): {t}", t["pid"]));
    }
    if t["rcode"] != "NOERROR" || lat <= 0.0 {
        return Err(format!("rcode {} latency {lat}: {t}", t["rcode"]));
    }
    if t["netns"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("no netns: {t}"));
    }
    Ok(format!("dig[{}] {lat:.2} ms", t["pid"]))
}

fn judge_drops(o: &Output) -> Result<String, String> {
    let v = o.json("drops.out");
    let drop = v.iter().find(|d| d["type"] == "drop" && d["reason"] == "NETFILTER_DROP" && d["dport"] == 8080);
    let refused = v.iter().find(|c| {
        c["type"] == "conn_fail" && c["kind"] == "refused" && c["dst"].as_str().is_some_and(|d| d.contains(":8081"))
    });
    match (drop, refused) {
        (Some(_), Some(c)) => Ok(format!("NETFILTER_DROP to :8080, refused :8081 by {}", c["process"]["comm"])),
        (d, c) => Err(format!(
            "{}{}({} records; {})",
            if d.is_none() { "no NETFILTER_DROP to :8080; " } else { "" },
            if c.is_none() { "no refused connection to :8081; " } else { "" },
            v.len(),
            stderr_tail(o, "drops")
        )),
    }
}

fn judge_underlay(o: &Output) -> Result<String, String> {
    let v = o.json("underlay.out");
    let n = v.iter().find(|s| s["type"] == "stats").and_then(|s| s["underlay_packets"].as_u64());
    match n {
        // dig's query leaving through the veth and the answer coming back.
        Some(n) if n >= 2 => Ok(format!("{n} packets fingerprinted on the veth")),
        _ => Err(format!("underlay packets: {n:?} (want >= 2; {})", stderr_tail(o, "underlay"))),
    }
}

/// The `tc` state lines the scenario prints: `filter ingress: …`, `qdisc: …`, …
fn state(o: &Output, name: &str) -> BTreeMap<String, String> {
    o.text(&format!("{name}.out"))
        .lines()
        .filter_map(|l| l.split_once(": ").or_else(|| l.strip_suffix(':').map(|k| (k, ""))))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

fn judge_restart(o: &Output) -> (Result<String, String>, Vec<String>) {
    let mut notes = Vec::new();
    let after_kill = state(o, "after_kill");
    let left: Vec<String> = after_kill
        .iter()
        .filter(|(k, v)| k.starts_with("filter") && !v.is_empty())
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !left.is_empty() {
        notes.push(format!("after SIGKILL, until the restart: {}", left.join("; ")));
    }
    if !o.text("killed.err").contains("attached") {
        return (Err(format!("first run did not attach: {}", stderr_tail(o, "killed"))), notes);
    }
    if !o.text("restarted.err").contains("attached") {
        return (Err(format!("restart after SIGKILL did not attach: {}", stderr_tail(o, "restarted"))), notes);
    }
    let before = state(o, "before");
    let after = state(o, "after_stop");
    let mut bad = Vec::new();
    for (k, v) in &after {
        let leftover = match k.as_str() {
            "filter ingress" | "filter egress" | "progs" => !v.is_empty(),
            "qdisc" => v.contains("clsact") && !before.get("qdisc").is_some_and(|b| b.contains("clsact")),
            "cgroup" => v.contains("dns_egress") || v.contains("dns_ingress"),
            _ => false,
        };
        if leftover {
            bad.push(format!("{k}: {v}"));
        }
    }
    if after.is_empty() {
        bad.push("no state printed after the stop".into());
    }
    if bad.is_empty() {
        (Ok("restart attached; nothing left after the stop".into()), notes)
    } else {
        (Err(format!("left attached: {}", bad.join("; "))), notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_and_notes_around_console_noise() {
        let text = "noise\n@@KT note kernel 6.1.0-57-amd64\n@@KT begin dns.out\n{\"type\":\"dns\"}\n\n@@KT end dns.out rc=0\n@@KT note dig_pid 42 0\n@@KT note began 1.5\n@@KT note done 3.0\n";
        let o = Output::parse(text);
        assert_eq!(o.kernel(), Some("6.1.0-57-amd64"));
        assert_eq!(o.rc("dns"), Some(0));
        assert_eq!(o.json("dns.out").len(), 1);
        assert_eq!(o.note("dig_pid"), Some(&["42".to_owned(), "0".to_owned()][..]));
        assert!(o.complete);
        assert_eq!(o.scenario_seconds(), Some(1.5));
    }

    #[test]
    fn an_empty_run_fails_every_check() {
        let r = judge(&Output::parse(""));
        assert!(!r.passed());
        assert!(r.verdicts.iter().all(|v| !v.pass), "{:?}", r.verdicts);
    }

    #[test]
    fn restart_flags_filters_left_behind() {
        let text = "@@KT begin killed.err\nktrace: attached at /x\n@@KT end killed.err rc=137\n\
                    @@KT begin restarted.err\nktrace: attached at /x\n@@KT end restarted.err rc=0\n\
                    @@KT begin before.out\nfilter ingress: \nfilter egress: \nqdisc: qdisc noqueue 0: root\n@@KT end before.out rc=0\n\
                    @@KT begin after_stop.out\nfilter ingress: filter protocol all pref 1 bpf\nfilter egress: \nqdisc: qdisc noqueue 0: root qdisc clsact ffff:\ncgroup: \nprogs: \n@@KT end after_stop.out rc=0\n";
        let (r, _) = judge_restart(&Output::parse(text));
        let e = r.expect_err("leftovers");
        assert!(e.contains("filter ingress") && e.contains("clsact"), "{e}");
    }
}
