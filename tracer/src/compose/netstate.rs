//! The node's network state, recorded next to the events: what tells a
//! wrong-NIC overlay or a forgotten drop rule apart after the fact.

use std::{collections::BTreeMap, fmt::Write as _, process::Command};

/// Collects the node's network state: what tells a wrong-NIC overlay or a
/// forgotten drop rule apart after the fact. Missing tools are noted, not fatal.
#[must_use]
pub fn netstate() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cmds: &[(&str, &[&str])] = &[
        ("ip -d addr", &["ip", "-d", "addr"]),
        ("ip route", &["ip", "route"]),
        ("ip -6 route", &["ip", "-6", "route"]),
        ("ip -d link show type vxlan", &["ip", "-d", "link", "show", "type", "vxlan"]),
        ("bridge fdb show", &["bridge", "fdb", "show"]),
        ("ip neigh", &["ip", "neigh"]),
        ("nft list ruleset", &["nft", "list", "ruleset"]),
        ("ip netns list", &["ip", "netns", "list"]),
    ];
    for (name, argv) in cmds {
        let text = match Command::new(argv[0]).args(&argv[1..]).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => format!("(exit {}) {}", o.status, String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("(not run: {e})"),
        };
        m.insert((*name).to_owned(), text);
    }
    let mut sysctls = String::new();
    for k in [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/rp_filter",
        "net/ipv4/conf/default/rp_filter",
        "net/ipv6/conf/all/forwarding",
        "net/bridge/bridge-nf-call-iptables",
    ] {
        let v = std::fs::read_to_string(format!("/proc/sys/{k}"))
            .map_or_else(|e| format!("({e})"), |s| s.trim().to_owned());
        let _ = writeln!(sysctls, "{} = {v}", k.replace('/', "."));
    }
    m.insert("sysctl".into(), sysctls);
    m
}
