//! resolv.conf parsing: what a stub resolver (glibc, musl) will do with a name.
//!
//! Only the directives that change which queries are sent are kept: `search`
//! / `domain` (the last one wins, as in glibc), `nameserver`, and the options
//! `ndots:N`, `timeout:N`, `attempts:N`, `single-request`,
//! `single-request-reopen`, `rotate`. Parsing never fails: unknown lines are
//! ignored, like the resolvers do.

use serde::Serialize;

/// Most search domains kept (glibc ≥ 2.26 has no limit; real files have < 10).
const MAX_SEARCH: usize = 32;
/// Most nameservers kept (glibc uses 3; more are listed but ignored).
const MAX_NAMESERVERS: usize = 8;
/// Most lines looked at: a resolv.conf is a handful of lines.
const MAX_LINES: usize = 1024;
/// Most raw option words kept.
const MAX_OPTIONS: usize = 32;
/// glibc caps ndots at 15.
const MAX_NDOTS: u8 = 15;

/// The resolver configuration that matters for explaining queries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvConf {
    /// Search list, lower case, without trailing dots, in order.
    pub search: Vec<String>,
    /// Nameserver addresses as written.
    pub nameservers: Vec<String>,
    /// `options ndots:N` (default 1).
    pub ndots: u8,
    /// `options timeout:N` in seconds (glibc default 5).
    pub timeout_s: u32,
    /// `options attempts:N` (glibc default 2).
    pub attempts: u32,
    /// `single-request` or `single-request-reopen`: A and AAAA sequentially.
    pub single_request: bool,
    /// Every option word as written (`ndots:5`, `timeout:2`, …).
    pub options: Vec<String>,
}

impl Default for ResolvConf {
    fn default() -> Self {
        Self {
            search: Vec::new(),
            nameservers: Vec::new(),
            ndots: 1,
            timeout_s: 5,
            attempts: 2,
            single_request: false,
            options: Vec::new(),
        }
    }
}

impl ResolvConf {
    /// Parses resolv.conf text the way glibc reads it.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut rc = Self::default();
        for line in text.lines().take(MAX_LINES) {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(directive) = words.next() else { continue };
            match directive {
                // glibc: `search` and `domain` override each other; the last wins.
                "search" | "domain" => {
                    rc.search = words.map(normalize_name).filter(|w| !w.is_empty()).take(MAX_SEARCH).collect();
                }
                "nameserver" => {
                    if let Some(ns) = words.next()
                        && rc.nameservers.len() < MAX_NAMESERVERS
                    {
                        rc.nameservers.push(ns.to_owned());
                    }
                }
                "options" => {
                    for w in words {
                        rc.apply_option(w);
                    }
                }
                _ => {}
            }
        }
        rc
    }

    fn apply_option(&mut self, w: &str) {
        if self.options.len() < MAX_OPTIONS {
            self.options.push(w.to_owned());
        }
        let (name, value) = w.split_once(':').unwrap_or((w, ""));
        let num = value.parse::<u32>().ok();
        match (name, num) {
            ("ndots", Some(n)) => self.ndots = u8::try_from(n).unwrap_or(MAX_NDOTS).min(MAX_NDOTS),
            // glibc clamps timeout to 30 s and attempts to 5.
            ("timeout", Some(n)) => self.timeout_s = n.clamp(1, 30),
            ("attempts", Some(n)) => self.attempts = n.clamp(1, 5),
            ("single-request" | "single-request-reopen", _) => self.single_request = true,
            _ => {}
        }
    }

    /// The names the resolver tries for `name` (lower case, no trailing dot),
    /// in order: search suffixes first when the name has fewer than `ndots`
    /// dots, the literal name first otherwise.
    #[must_use]
    pub fn candidates(&self, name: &str) -> Vec<String> {
        // One sized allocation per candidate (`format!` was ~800 instructions each).
        let suffixed = self.search.iter().map(|s| {
            let mut c = String::with_capacity(name.len() + 1 + s.len());
            c.push_str(name);
            c.push('.');
            c.push_str(s);
            c
        });
        if dots(name) < usize::from(self.ndots) {
            suffixed.chain(std::iter::once(name.to_owned())).collect()
        } else {
            std::iter::once(name.to_owned()).chain(suffixed).collect()
        }
    }

    /// The cluster domain the search list points at (`cluster.local` when
    /// `svc.cluster.local` is listed), if any.
    #[must_use]
    pub fn cluster_domain(&self) -> Option<&str> {
        self.search.iter().find_map(|s| s.strip_prefix("svc."))
    }
}

/// Lower case, without a trailing dot.
#[must_use]
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Number of dots in a name (without trailing dot).
#[must_use]
pub fn dots(name: &str) -> usize {
    name.bytes().filter(|&b| b == b'.').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K8S: &str = "# kubelet\nsearch critical-app.svc.cluster.local svc.cluster.local cluster.local localdomain\nnameserver 10.96.0.10\noptions ndots:5 timeout:2 attempts:1\n";

    #[test]
    fn parses_kubernetes_resolv_conf() {
        let rc = ResolvConf::parse(K8S);
        assert_eq!(rc.search, ["critical-app.svc.cluster.local", "svc.cluster.local", "cluster.local", "localdomain"]);
        assert_eq!(rc.nameservers, ["10.96.0.10"]);
        assert_eq!((rc.ndots, rc.timeout_s, rc.attempts), (5, 2, 1));
        assert!(!rc.single_request);
        assert_eq!(rc.options, ["ndots:5", "timeout:2", "attempts:1"]);
        assert_eq!(rc.cluster_domain(), Some("cluster.local"));
    }

    #[test]
    fn last_search_or_domain_wins_and_garbage_is_ignored() {
        let rc = ResolvConf::parse(
            "search a b\ndomain Example.COM.\nbogus line\noptions ndots:99 single-request timeout:x\n\0\u{fffd}",
        );
        assert_eq!(rc.search, ["example.com"]);
        assert_eq!(rc.ndots, 15);
        assert_eq!(rc.timeout_s, 5);
        assert!(rc.single_request);
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
    }

    #[test]
    fn candidates_follow_ndots() {
        let rc = ResolvConf::parse(K8S);
        let c = rc.candidates("backend.critical-app.svc.cluster.local");
        assert_eq!(c.len(), 5);
        assert_eq!(c[0], "backend.critical-app.svc.cluster.local.critical-app.svc.cluster.local");
        assert_eq!(c[4], "backend.critical-app.svc.cluster.local");
        let rc2 = ResolvConf::parse("search a.b\noptions ndots:2\n");
        assert_eq!(rc2.candidates("x.y.z"), ["x.y.z", "x.y.z.a.b"]);
    }
}
