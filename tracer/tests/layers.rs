//! No import cycles between the library's top-level modules: `source →
//! decode → enrich → analyze → output` only ever looks down. Reads the
//! sources (`use crate::…` and `crate::…` paths outside comments, string
//! literals and test files) and fails on a cycle, naming its edges.

#![allow(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of its package and uses a few; unused ones are caught on the library"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Cycles known when this check was written, each with who removes it.
/// Empty this list as they go; never add to it.
const KNOWN: &[(&str, &str)] = &[
    // agent/{daemon,encode}.rs use `cli::Global` and `cli::record`: the
    // composition moves to a library module (#16, drops side).
    ("agent", "cli"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "tests" {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") && name != "tests.rs" {
            out.push(p);
        }
    }
}

/// Where the first inline test module starts (`#[cfg(test)] mod x {`):
/// tests may look anywhere. Test modules sit at the end of their files.
fn tests_start(src: &str) -> usize {
    src.match_indices("#[cfg(test)]")
        .map(|(at, m)| at + m.len())
        .find(|&after| {
            let rest = src[after..].trim_start();
            let rest = rest.strip_prefix("pub(crate) ").unwrap_or(rest);
            rest.strip_prefix("mod ")
                .and_then(ident_at)
                .is_some_and(|id| rest["mod ".len()..].trim_start()[id.len()..].trim_start().starts_with('{'))
        })
        .map_or(src.len(), |after| after - "#[cfg(test)]".len())
}

/// The code without comments, string and char literals, and inline test modules.
fn code_only(src: &str) -> String {
    let src = &src[..tests_start(src)];
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            // Raw strings: r"…", r#"…"# (code holds JSON in them).
            (b'r', Some(b'#' | b'"')) if i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') => {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            // Char literals ('"', '\'', '{'), not lifetimes ('a).
            (b'\'', Some(b'\\')) => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            }
            (b'\'', Some(_)) if b.get(i + 2) == Some(&b'\'') => i += 3,
            (b'"', _) => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            (c, _) => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// Top-level modules named by `crate::x` paths and `use crate::{x, y::…}` groups.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.extend(ident_at(&group[start..i]).map(str::to_owned));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(ident_at(&group[start..i]).map(str::to_owned));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else if let Some(id) = ident_at(rest) {
            out.insert(id.to_owned());
        }
    }
    out
}

fn deps() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mods = BTreeMap::new();
    for e in std::fs::read_dir(&src).expect("tracer/src").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let m = name.strip_suffix(".rs").unwrap_or(&name).to_owned();
        if m == "lib" || m == "main" || m == "bin" {
            continue;
        }
        let mut files = Vec::new();
        if e.path().is_dir() {
            rust_files(&e.path(), &mut files);
        } else {
            files.push(e.path());
        }
        let refs: &mut BTreeSet<String> = mods.entry(m).or_default();
        for f in files {
            refs.extend(crate_refs(&code_only(&std::fs::read_to_string(&f).expect("read source"))));
        }
    }
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    for (m, refs) in &mut mods {
        refs.retain(|r| r != m && names.contains(r));
    }
    mods
}

fn reaches(deps: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(m) = stack.pop() {
        for d in deps.get(&m).into_iter().flatten() {
            if d == to {
                return true;
            }
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    false
}

#[test]
fn top_level_modules_have_no_import_cycles() {
    let deps = deps();
    assert!(deps.contains_key("pipeline") && deps.contains_key("model"), "found the modules: {deps:?}");
    let known = |a: &str, b: &str| KNOWN.iter().any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b));
    let mut cycles = Vec::new();
    for (m, ds) in &deps {
        for d in ds {
            // An edge m → d is on a cycle when d leads back to m.
            if reaches(&deps, d, m) && !known(m, d) {
                cycles.push(format!("{m} → {d}"));
            }
        }
    }
    let table: Vec<String> =
        deps.iter().map(|(m, ds)| format!("{m} → {}", ds.iter().cloned().collect::<Vec<_>>().join(" "))).collect();
    assert!(cycles.is_empty(), "edges on import cycles: {cycles:?}\nall dependencies:\n{}", table.join("\n"));
}

#[test]
fn the_checker_sees_groups_and_paths() {
    let code = code_only(
        "use crate::{a::X, b, c::{d, e}};\n// crate::f\nfn g() { crate::h::i(); let s = \"crate::j\"; let q = '\"'; crate::l::m(); }\nconst J: &str = r#\"{\"crate::n\": 1}\"#; fn o<'a>(x: &'a str) { crate::p::q(x) }\n#[cfg(test)]\nmod t;\nfn r() { crate::s::t() }\n#[cfg(test)]\nmod tests {\n use crate::k;\n}",
    );
    let refs: Vec<String> = crate_refs(&code).into_iter().collect();
    assert_eq!(refs, ["a", "b", "c", "h", "l", "p", "s"]);
}
