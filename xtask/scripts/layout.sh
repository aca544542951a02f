#!/usr/bin/env bash
# The source layout of two commits side by side, for a closing note: per
# folder of tracer/src, tracer-ebpf/src and tracer-common/src, the files and
# lines at BEFORE and AFTER, then every file over LIMIT lines before its
# tests (the first `#[cfg(test)]` line; test-only files, `tests.rs` and
# `tests/`, left out) at AFTER.
#   xtask/scripts/layout.sh [BEFORE [AFTER]]   (defaults: 46ac352, HEAD)
# Reads git objects only: no checkout, no build.
set -euo pipefail
before=${1:-46ac352}
after=${2:-HEAD}
limit=${LIMIT:-800}
roots=(tracer/src tracer-ebpf/src tracer-common/src)

# "folder files lines" per folder (a file's folder relative to the repo), for one commit.
per_folder() {
    local rev=$1
    git ls-tree -r --name-only "$rev" -- "${roots[@]}" | grep '\.rs$' | while read -r f; do
        printf '%s %s\n' "$(dirname "$f")" "$(git show "$rev:$f" | wc -l)"
    done | awk '{n[$1]++; l[$1]+=$2} END {for (d in n) print d, n[d], l[d]}' | sort
}

b=$(mktemp)
a=$(mktemp)
trap 'rm -f "$b" "$a"' EXIT
per_folder "$before" >"$b"
per_folder "$after" >"$a"
printf '| folder | files %s | lines %s | files %s | lines %s |\n|---|---:|---:|---:|---:|\n' \
    "$before" "$before" "$after" "$after"
join -a1 -a2 -e- -o 0,1.2,1.3,2.2,2.3 "$b" "$a" | awk '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}'
awk '{f+=$2; l+=$3} END {printf "| **total before** | %d | %d | | |\n", f, l}' "$b"
awk '{f+=$2; l+=$3} END {printf "| **total after** | | | %d | %d |\n", f, l}' "$a"

echo
echo "Files under tracer/src over $limit lines before their tests, at $after:"
found=0
while read -r f; do
    n=$(git show "$after:$f" | awk '!done && /^#\[cfg\(test\)\]/ {n = NR - 1; done = 1} END {print done ? n : NR}')
    if [ "$n" -gt "$limit" ]; then
        echo "  $f: $n"
        found=1
    fi
done < <(git ls-tree -r --name-only "$after" -- tracer/src | grep '\.rs$' | grep -Ev '(^|/)tests(\.rs|/)')
[ "$found" = 1 ] || echo "  none"
