#!/usr/bin/env bash
# drop_kfree_skb of two ktrace binaries on the same drops (usage: drop-pair.sh A_BIN B_BIN; root,
# under /tmp/ktrace-host.lock). Per round both `BIN record -w` run at once (which attaches first
# alternates: the first program on the tracepoint pays for the lines both read, the skb, the
# packet and `jiffies`), then the no-op tp_btf (noop.py); DROPS UDP packets to a closed port
# paced at RATE/s like bench section 1 (sender pinned to CPU 0, the bench's DNS-query payloads),
# so each drop finds its lines cold as in the bench. Both see the same drops under the same
# machine load: the pair's difference is far steadier than kernel-cost.sh's alternating runs.
# Env: ROUNDS (8), DROPS (40000), RATE (20000). Traffic stays between the two namespaces this
# script creates; they are deleted on exit, also on failure.
set -euo pipefail
ROUNDS=${ROUNDS:-8}; DROPS=${DROPS:-40000}; RATE=${RATE:-20000}
CLI=kdp-cli SRV=kdp-srv SIP=10.218.0.2
WORK=$(mktemp -d /tmp/kdp.XXXXXX)
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
down() { for ns in $CLI $SRV; do [ -e /run/netns/$ns ] && ip netns del $ns || true; done; }
cleanup() {
  exec 7>&- 2>/dev/null || true
  for p in ${KA:-} ${KB:-}; do kill -INT "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  down; sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS"; rm -rf "$WORK"
}
trap cleanup EXIT
down
ip netns add $CLI; ip netns add $SRV
ip -n $CLI link add kdp-c type veth peer name kdp-s netns $SRV
ip -n $CLI addr add 10.218.0.1/24 dev kdp-c; ip -n $SRV addr add $SIP/24 dev kdp-s
for ns in $CLI $SRV; do ip -n $ns link set lo up; done
ip -n $CLI link set kdp-c up; ip -n $SRV link set kdp-s up
sysctl -qw kernel.bpf_stats_enabled=1
snap() { bpftool -j prog show > "$1"; }
start() { # BIN LABEL
  "$1" record -w "$WORK/$2.pcapng" 2>"$WORK/$2.err" & eval "K$2=$!"
  for _ in $(seq 200); do grep -q attached "$WORK/$2.err" && return; sleep 0.1; done
  echo "$1 did not attach" >&2; exit 1
}
echo "round order | A ns (ratio) | B ns (ratio) | no-op ns | B - A"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then F=$1 S=$2 FL=A SL=B; else F=$2 S=$1 FL=B SL=A; fi
  snap "$WORK/p0.json"; start "$F" $FL; snap "$WORK/p1.json"; start "$S" $SL; snap "$WORK/p2.json"
  mkfifo "$WORK/hold"; (python3 "$(dirname "$0")/noop.py" < "$WORK/hold" > "$WORK/noop.out" 2>&1 &); exec 7>"$WORK/hold"
  for _ in $(seq 100); do grep -q attached "$WORK/noop.out" && break; sleep 0.1; done
  snap "$WORK/s1.json"
  ip netns exec $CLI taskset -c 0 python3 "$(dirname "$0")/paced_drops.py" $DROPS $RATE "$SIP"
  snap "$WORK/s2.json"
  exec 7>&-; rm -f "$WORK/hold"
  kill -INT "$KA" "$KB"; wait "$KA" "$KB" || true; KA= KB=
  sleep 0.3
  for l in A B; do grep -qi "error\|fail" "$WORK/$l.err" && { echo "$l:"; tail -3 "$WORK/$l.err"; } || true; done
  python3 - "$WORK" $FL $SL "$r" <<'PY'
import json,sys
w,fl,sl,r=sys.argv[1:5]
L=lambda n:{p['id']:p for p in json.load(open(f'{w}/{n}.json'))}
p0,p1,p2,s1,s2=L('p0'),L('p1'),L('p2'),L('s1'),L('s2')
def d(ids,name):
    t=n=0
    for i in ids:
        p=s2.get(i); q=s1.get(i,{})
        if not p or p.get('name')!=name: continue
        t+=p.get('run_time_ns',0)-q.get('run_time_ns',0); n+=p.get('run_cnt',0)-q.get('run_cnt',0)
    return (t/n if n else float('nan')), n
got={fl:d([i for i in p1 if i not in p0],'drop_kfree_skb'), sl:d([i for i in p2 if i not in p1],'drop_kfree_skb')}
nt=d([i for i in s1 if i not in p2],'kk_noop_tp')
a,b=got['A'][0],got['B'][0]
print(f"{r:>5} {fl}{sl}    | {a:6.1f} ({a/nt[0]:.2f}x) | {b:6.1f} ({b/nt[0]:.2f}x) | {nt[0]:5.1f} | {b-a:+6.1f} [{got['A'][1]}/{got['B'][1]}/{nt[1]}]",flush=True)
PY
done
