//! A strict reader of the Prometheus text exposition format 0.0.4, for tests
//! of the agent's `/metrics` (ours and the end-to-end ones; `promtool check
//! metrics` runs next to it where it is installed).

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Sample name (e.g. `x_bucket` of histogram `x`).
    pub name: String,
    /// Labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Why an exposition is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Debug, Default)]
struct FamilyState {
    kind: Option<Kind>,
    help: bool,
    samples: bool,
    closed: bool,
}

#[derive(Debug, Default)]
struct HistCheck {
    line: usize,
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
}

/// Parses and checks a text exposition (format 0.0.4) strictly: metric and
/// label name syntax, escapes, HELP and TYPE (each once) before a family's
/// samples, families in one group each, no duplicate series, counters
/// non-negative, histogram buckets cumulative with `le` ending at `+Inf` and
/// `_count` equal to it.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, ExpositionError> {
    let err = |line: usize, reason: String| ExpositionError { line, reason };
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    } else if !text.is_empty() {
        return Err(err(lines.len(), "last line does not end with a newline".into()));
    }
    let mut families: HashMap<String, FamilyState> = HashMap::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    let mut hists: BTreeMap<(String, BTreeMap<String, String>), HistCheck> = BTreeMap::new();
    let mut out = Vec::new();

    for (i, raw) in lines.iter().enumerate() {
        let n = i + 1;
        let line = raw.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        if raw.contains('\r') {
            return Err(err(n, "carriage return in line".into()));
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start_matches([' ', '\t']);
            let (kw, rest) = split_token(rest);
            if kw != "HELP" && kw != "TYPE" {
                continue;
            }
            let (name, rest) = split_token(rest);
            if !valid_metric_name(name) {
                return Err(err(n, format!("invalid metric name {name:?} in {kw}")));
            }
            enter_family(&mut families, &mut current, name).map_err(|r| err(n, r))?;
            let fam = families.get_mut(name).expect("entered above");
            if kw == "HELP" {
                if fam.help {
                    return Err(err(n, format!("second HELP for {name}")));
                }
                fam.help = true;
                check_help_escapes(rest).map_err(|r| err(n, r))?;
            } else {
                if fam.kind.is_some() {
                    return Err(err(n, format!("second TYPE for {name}")));
                }
                if fam.samples {
                    return Err(err(n, format!("TYPE for {name} after its samples")));
                }
                let (t, extra) = split_token(rest);
                if !extra.is_empty() {
                    return Err(err(n, format!("trailing text after TYPE: {extra:?}")));
                }
                fam.kind = Some(match t {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    "summary" => Kind::Summary,
                    "untyped" => Kind::Untyped,
                    _ => return Err(err(n, format!("unknown metric type {t:?}"))),
                });
            }
            continue;
        }

        let s = parse_sample_line(line).map_err(|r| err(n, r))?;
        // Which family the sample belongs to: the current one if it is a
        // histogram or summary and the name carries one of its suffixes.
        let family = current
            .as_ref()
            .filter(|c| {
                let kind = families.get(*c).and_then(|f| f.kind);
                let suffixes: &[&str] = match kind {
                    Some(Kind::Histogram) => &["_bucket", "_sum", "_count"],
                    Some(Kind::Summary) => &["", "_sum", "_count"],
                    _ => &[""],
                };
                s.name.strip_prefix(c.as_str()).is_some_and(|rest| suffixes.contains(&rest))
            })
            .cloned()
            .unwrap_or_else(|| s.name.clone());
        enter_family(&mut families, &mut current, &family).map_err(|r| err(n, r))?;
        let fam = families.get_mut(&family).expect("entered above");
        let Some(kind) = fam.kind else {
            return Err(err(n, format!("sample {} without a TYPE line", s.name)));
        };
        if !fam.help {
            return Err(err(n, format!("sample {} without a HELP line", s.name)));
        }
        fam.samples = true;
        if !series.insert((s.name.clone(), s.labels.clone())) {
            return Err(err(n, format!("duplicate series {}{:?}", s.name, s.labels)));
        }
        match kind {
            Kind::Counter if s.value.is_nan() || s.value < 0.0 => {
                return Err(err(n, format!("counter {} has value {}", s.name, s.value)));
            }
            Kind::Histogram => {
                let suffix = &s.name[family.len()..];
                let mut key_labels = s.labels.clone();
                let le = key_labels.remove("le");
                let h = hists
                    .entry((family.clone(), key_labels))
                    .or_insert_with(|| HistCheck { line: n, ..HistCheck::default() });
                match (suffix, le) {
                    ("_bucket", Some(le)) => {
                        let bound = parse_float(&le).ok_or_else(|| err(n, format!("invalid le {le:?}")))?;
                        if bound.is_nan() {
                            return Err(err(n, "le is NaN".into()));
                        }
                        if s.value.is_nan() || s.value < 0.0 {
                            return Err(err(n, format!("bucket count {}", s.value)));
                        }
                        if let Some(&(prev_le, prev)) = h.buckets.last() {
                            if bound <= prev_le {
                                return Err(err(n, format!("le {le} not above the previous bucket's")));
                            }
                            if s.value < prev {
                                return Err(err(n, "bucket counts are not cumulative".into()));
                            }
                        }
                        h.buckets.push((bound, s.value));
                    }
                    ("_bucket", None) => return Err(err(n, "bucket without le label".into())),
                    (_, Some(_)) => return Err(err(n, format!("le label on {}", s.name))),
                    ("_count", None) => {
                        if s.value.is_nan() || s.value < 0.0 {
                            return Err(err(n, format!("histogram count {}", s.value)));
                        }
                        h.count = Some(s.value);
                    }
                    ("_sum", None) => h.sum = Some(s.value),
                    _ => return Err(err(n, format!("sample {} in histogram {family}", s.name))),
                }
            }
            _ => {}
        }
        out.push(s);
    }

    for ((family, labels), h) in &hists {
        let e = |r: String| err(h.line, format!("histogram {family}{labels:?}: {r}"));
        let Some(&(last_le, inf)) = h.buckets.last() else { return Err(e("no buckets".into())) };
        if last_le != f64::INFINITY {
            return Err(e("buckets do not end with le=\"+Inf\"".into()));
        }
        match h.count {
            None => return Err(e("no _count".into())),
            Some(c) if c.total_cmp(&inf).is_ne() => {
                return Err(e(format!("_count {c} differs from the +Inf bucket {inf}")));
            }
            Some(_) => {}
        }
        if h.sum.is_none() {
            return Err(e("no _sum".into()));
        }
    }
    Ok(out)
}

fn enter_family(
    families: &mut HashMap<String, FamilyState>,
    current: &mut Option<String>,
    name: &str,
) -> Result<(), String> {
    if current.as_deref() == Some(name) {
        return Ok(());
    }
    if let Some(prev) = current.take() {
        families.entry(prev).or_default().closed = true;
    }
    let fam = families.entry(name.to_owned()).or_default();
    if fam.closed {
        return Err(format!("{name} appears in two separate groups"));
    }
    *current = Some(name.to_owned());
    Ok(())
}

/// The token up to the next blank, and the rest after the blanks that follow.
fn split_token(s: &str) -> (&str, &str) {
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start_matches([' ', '\t']))
}

fn check_help_escapes(s: &str) -> Result<(), String> {
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('\\' | 'n') => {}
                other => {
                    return Err(format!("invalid escape in HELP: \\{}", other.map(String::from).unwrap_or_default()));
                }
            }
        }
    }
    Ok(())
}

fn valid_metric_name(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut it = s.chars();
    it.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && it.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust also reads "inf", "infinity" and "nan"; Prometheus writes only the above.
        _ if s.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => None,
        _ => s.parse().ok(),
    }
}

fn parse_sample_line(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = parse_labels(r, &mut labels)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a blank before the value".into());
    }
    let (value, rest) = split_token(rest.trim_start_matches([' ', '\t']));
    let value = parse_float(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    let (ts, rest) = split_token(rest);
    if !ts.is_empty() && ts.parse::<i64>().is_err() {
        return Err(format!("invalid timestamp {ts:?}"));
    }
    if !rest.is_empty() {
        return Err(format!("trailing text {rest:?}"));
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Parses labels after `{`; returns the text after `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let name = &s[..end];
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if name.starts_with("__") {
            return Err(format!("reserved label name {name:?}"));
        }
        s = s[end..].trim_start_matches([' ', '\t']);
        s = s.strip_prefix('=').ok_or_else(|| format!("expected '=' after label {name}"))?;
        s = s.trim_start_matches([' ', '\t']);
        s = s.strip_prefix('"').ok_or_else(|| format!("expected '\"' to open the value of {name}"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {name}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("invalid escape in label {name}: {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("duplicate label {name}"));
        }
        s = s[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validator_accepts_the_format_it_should() {
        let ok = "# A comment\n\
                  # HELP x_total Things.\n\
                  # TYPE x_total counter\n\
                  x_total{a=\"1\",b=\"q\\\"\\\\\\n\",} 3 1700000000000\n\
                  x_total 0\n\
                  \n\
                  # HELP h Hist.\n\
                  # TYPE h histogram\n\
                  h_bucket{le=\"0.5\"} 1\n\
                  h_bucket{le=\"+Inf\"} 2\n\
                  h_sum -1.5e-3\n\
                  h_count 2\n\
                  # HELP g\n\
                  # TYPE g gauge\n\
                  g{x = \"y\"}\t-Inf\n";
        let s = parse_exposition(ok).expect("valid");
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].labels["b"], "q\"\\\n");
        assert!(s[6].value == f64::NEG_INFINITY);
        assert!(parse_exposition("").expect("empty is valid").is_empty());
    }

    #[test]
    fn validator_rejects_bad_expositions() {
        let head = "# HELP c C.\n# TYPE c counter\n";
        let hist = "# HELP h H.\n# TYPE h histogram\n";
        let cases: &[(&str, String)] = &[
            ("no trailing newline", format!("{head}c 1")),
            ("sample without TYPE", "# HELP c C.\nc 1\n".into()),
            ("sample without HELP", "# TYPE c counter\nc 1\n".into()),
            ("TYPE twice", format!("{head}# TYPE c counter\nc 1\n")),
            ("HELP twice", format!("{head}# HELP c again\nc 1\n")),
            ("TYPE after samples", "# HELP c C.\nc 1\n# TYPE c counter\n".into()),
            ("unknown type", "# HELP c C.\n# TYPE c countr\nc 1\n".into()),
            ("bad metric name", "# HELP 1c C.\n# TYPE 1c counter\n1c 1\n".into()),
            ("bad metric name in sample", format!("{head}c-x 1\n")),
            ("bad label name", format!("{head}c{{1a=\"x\"}} 1\n")),
            ("reserved label name", format!("{head}c{{__name__=\"x\"}} 1\n")),
            ("duplicate label", format!("{head}c{{a=\"x\",a=\"y\"}} 1\n")),
            ("duplicate series", format!("{head}c{{a=\"x\"}} 1\nc{{a=\"x\"}} 2\n")),
            ("duplicate series, label order", format!("{head}c{{a=\"x\",b=\"y\"}} 1\nc{{b=\"y\",a=\"x\"}} 2\n")),
            ("negative counter", format!("{head}c -1\n")),
            ("NaN counter", format!("{head}c NaN\n")),
            ("bad escape", format!("{head}c{{a=\"\\t\"}} 1\n")),
            ("bad HELP escape", "# HELP c C\\\"\n# TYPE c counter\nc 1\n".into()),
            ("unterminated value", format!("{head}c{{a=\"x}} 1\n")),
            ("unquoted value", format!("{head}c{{a=x}} 1\n")),
            ("missing value", format!("{head}c\n")),
            ("bad value", format!("{head}c one\n")),
            ("lower-case inf", format!("{head}c inf\n")),
            ("bad timestamp", format!("{head}c 1 1.5\n")),
            ("trailing text", format!("{head}c 1 2 3\n")),
            ("no blank before value", format!("{head}c{{a=\"x\"}}1\n")),
            ("split family", format!("{head}c{{a=\"1\"}} 1\n# HELP d D.\n# TYPE d gauge\nd 1\nc{{a=\"2\"}} 1\n")),
            ("carriage return", format!("{head}c 1\r\n")),
            ("bucket without le", format!("{hist}h_bucket 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n")),
            ("no +Inf bucket", format!("{hist}h_bucket{{le=\"1\"}} 1\nh_sum 1\nh_count 1\n")),
            (
                "not cumulative",
                format!("{hist}h_bucket{{le=\"1\"}} 2\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"),
            ),
            (
                "le not increasing",
                format!(
                    "{hist}h_bucket{{le=\"2\"}} 1\nh_bucket{{le=\"1\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n"
                ),
            ),
            ("bad le", format!("{hist}h_bucket{{le=\"x\"}} 1\nh_bucket{{le=\"+Inf\"}} 1\nh_sum 1\nh_count 1\n")),
            ("count differs", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\nh_count 3\n")),
            ("no count", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\n")),
            ("no sum", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_count 2\n")),
            ("no buckets", format!("{hist}h_sum 1\nh_count 0\n")),
            ("le on count", format!("{hist}h_bucket{{le=\"+Inf\"}} 2\nh_sum 1\nh_count{{le=\"1\"}} 2\n")),
            (
                "negative bucket",
                format!("{hist}h_bucket{{le=\"1\"}} -1\nh_bucket{{le=\"+Inf\"}} 0\nh_sum 1\nh_count 0\n"),
            ),
            ("histogram sample without suffix", format!("{hist}h 1\n")),
        ];
        for (what, text) in cases {
            assert!(parse_exposition(text).is_err(), "accepted {what}:\n{text}");
        }
    }
}
