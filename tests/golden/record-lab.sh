#!/bin/sh
# Records tests/golden/captures/lab-node-{a,b}.pcapng: one short run of the
# lab with every fault ktrace explains, each node recorded from inside its
# namespace (as tests/lab_drops.rs does). Needs root and the lab's tools;
# run it under the host lock from the repository root:
#
#   flock /tmp/ktrace-host.lock tests/golden/record-lab.sh [KTRACE_BIN]
#
# What happens, in order (about 15 s):
#   1. the client pod resolves backend.critical-app.svc.cluster.local: the
#      search-list walk whose `.localdomain` names kube-dns forwards to a
#      blackholed upstream (search_fanout, upstream_timeout);
#   2. client → backend:8080, dropped by node-b's nftables (NETFILTER_DROP);
#   3. client → backend:8081, refused (conn_fail refused);
#   4. the fabric starts dropping node-b's VXLAN (the lab's
#      fabric-drop-vxlan fault, applied while the recorders run) and the
#      backend pod asks kube-dns on node-a (fabric_loss).
#
# Regenerating the captures changes the golden outputs: run
# `KTRACE_GOLDEN_UPDATE=1 cargo test -p ktrace-e2e --test golden` with the
# binary the goldens are meant to describe, and say why in the commit.
set -eu
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-target/release/ktrace}")
OUT=$(realpath tests/golden/captures)
TMP=$(mktemp -d)
PIDS=""

cleanup() {
    for p in $PIDS; do kill -INT "$p" 2>/dev/null || true; done
    sleep 1
    for p in $PIDS; do kill -KILL "$p" 2>/dev/null || true; done
    cargo xtask lab down >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

cargo xtask lab up --fault node-drop --fault refused
SNAP=$(cargo xtask lab snapshot)
mkdir -p "$OUT"
for n in node-a node-b; do
    rm -f "$OUT/lab-$n.pcapng"
    ip netns exec "kt-$n" "$BIN" record --node-name "$n" --netns-scope "kt-$n" --kube-snapshot "$SNAP" \
        --underlay eth0 -w "$OUT/lab-$n.pcapng" </dev/null >/dev/null 2>"$TMP/$n.err" &
    PIDS="$PIDS $!"
done
for n in node-a node-b; do
    i=0
    until grep -q attached "$TMP/$n.err"; do
        i=$((i + 1))
        if [ "$i" -gt 200 ]; then
            cat "$TMP/$n.err" >&2
            echo "record-lab: the $n recorder did not attach" >&2
            exit 1
        fi
        sleep 0.1
    done
done

lab() { cargo xtask lab exec "$@" >/dev/null 2>&1 || true; }
lab critical-app/client -- getent hosts backend.critical-app.svc.cluster.local
lab critical-app/client -- curl -s -m 2 http://10.244.2.30:8080/
lab critical-app/client -- curl -s -m 2 http://10.244.2.30:8081/
ip netns exec kt-fabric nft -f - <<'EOF'
table bridge kt_fabric_drop_vxlan {
  chain c {
    type filter hook forward priority 0;
    ip saddr 192.168.77.11 udp dport 4789 drop
  }
}
EOF
lab critical-app/backend -- dig +tries=2 +time=1 @10.244.1.10 kube-dns.kube-system.svc.cluster.local
sleep 1.5

for p in $PIDS; do kill -INT "$p"; done
for p in $PIDS; do wait "$p"; done
PIDS=""
cat "$TMP"/*.err >&2
ls -l "$OUT"/lab-node-*.pcapng
