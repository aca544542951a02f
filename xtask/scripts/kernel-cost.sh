#!/usr/bin/env bash
# Side-by-side in-kernel cost of two ktrace binaries, as bench section 1 measures
# it (usage: kernel-cost.sh BASE_BIN NEW_BIN; root, under /tmp/ktrace-host.lock). Per round and
# binary (order alternating), `BIN record -w` attached alone, then no-op
# cgroup_skb (ingress+egress, BPF links at the cgroup2 root) and a no-op tp_btf on
# kfree_skb attached after it; dnsperf -> dnsmasq at QPS for SECS, then FLOOD UDP
# packets to a closed port (drops + egress non-DNS fast path). BPF stats via sysctl.
set -euo pipefail
# Env: ROUNDS (3), SECS (3), QPS (5000), FLOOD (20000). Traffic stays between the two
# namespaces this script creates; they are deleted on exit, also on failure.
# DROP_RATE=20000: the drops as bench section 1 sends them (paced bursts at that rate,
# sender pinned to CPU 0, the bench's DNS-query payloads: each drop finds the skb,
# device and netns lines cold); unset, a warm-cache flood as fast as Python sends.
# SECS=0 skips the dnsperf phase (drops only).
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-3}; QPS=${QPS:-5000}; FLOOD=${FLOOD:-20000}; DROP_RATE=${DROP_RATE:-0}
CLI=kks-cli SRV=kks-srv CIP=10.215.0.1 SIP=10.215.0.2
WORK=$(mktemp -d /tmp/kks.XXXXXX)
# The no-op programs: xtask/scripts/noop.py (shared with the other cost script).
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
down() {
  for ns in $CLI $SRV; do
    [ -e /run/netns/$ns ] || continue
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    sleep 0.2; ip netns del $ns 2>/dev/null || true
  done
}
cleanup() { [ -n "${NP:-}" ] && kill "$NP" 2>/dev/null || true; [ -n "${KT:-}" ] && kill -INT "$KT" 2>/dev/null && wait "$KT" 2>/dev/null || true; down; sysctl -qw kernel.bpf_stats_enabled=$OLD_STATS; rm -rf "$WORK"; }
trap cleanup EXIT
down
ip netns add $CLI; ip netns add $SRV
ip -n $CLI link add kks-c type veth peer name kks-s netns $SRV
ip -n $CLI addr add $CIP/24 dev kks-c; ip -n $SRV addr add $SIP/24 dev kks-s
for ns in $CLI $SRV; do ip -n $ns link set lo up; done
ip -n $CLI link set kks-c up; ip -n $SRV link set kks-s up
ip netns exec $SRV dnsmasq --no-daemon --no-resolv --no-hosts --port=53 --listen-address=$SIP --bind-interfaces \
   --address=/example.com/10.1.2.3 --cache-size=1000 --log-facility=/dev/null >/dev/null 2>&1 &
for i in $(seq 200); do echo "q$i.example.com A"; done > $WORK/q.txt
sleep 0.5
sysctl -qw kernel.bpf_stats_enabled=1
snap() { bpftool -j prog show > "$1"; }
A=$1; B=$2
for r in $(seq $ROUNDS); do
  if [ $((r % 2)) = 1 ]; then ORDER="$A $B"; else ORDER="$B $A"; fi
  for BIN in $ORDER; do
    snap $WORK/pre.json
    "$BIN" record -w $WORK/x.pcapng 2>$WORK/err & KT=$!
    for i in $(seq 200); do grep -q attached $WORK/err && break; sleep 0.1; done
    mkfifo $WORK/hold; (python3 "$(dirname "$0")/noop.py" < $WORK/hold > $WORK/noop.out 2>&1 &) ; exec 7>$WORK/hold
    for i in $(seq 100); do grep -q attached $WORK/noop.out && break; sleep 0.1; done
    snap $WORK/s0.json
    [ "$SECS" = 0 ] || ip netns exec $CLI dnsperf -s $SIP -d $WORK/q.txt -l $SECS -Q $QPS >/dev/null 2>&1 || true
    snap $WORK/s1.json
    if [ "$DROP_RATE" = 0 ]; then
    ip netns exec $CLI python3 -c "
import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for i in range($FLOOD):
    try: s.sendto(b'x'*64,('$SIP',9998))
    except OSError: pass
"
    else
    ip netns exec $CLI taskset -c 0 python3 "$(dirname "$0")/paced_drops.py" $FLOOD $DROP_RATE "$SIP"
    fi
    snap $WORK/s2.json
    exec 7>&-; rm -f $WORK/hold
    kill -INT $KT; wait $KT || true; KT=
    sleep 0.3
    python3 - "$BIN" $WORK <<'PY'
import json,sys
b,w=sys.argv[1],sys.argv[2]
L=lambda n:{p['id']:p for p in json.load(open(f'{w}/{n}.json'))}
pre,s0,s1,s2=L('pre'),L('s0'),L('s1'),L('s2')
def d(a,c,name):
    t=n=0
    for i,p in c.items():
        if i in pre or p.get('name')!=name: continue
        q=a.get(i,{})
        t+=p.get('run_time_ns',0)-q.get('run_time_ns',0); n+=p.get('run_cnt',0)-q.get('run_cnt',0)
    return (t/n if n else float('nan')), n
e=d(s0,s1,'dns_egress'); i=d(s0,s1,'dns_ingress'); ne=d(s0,s1,'kk_noop_eg'); ni=d(s0,s1,'kk_noop_in')
fe=d(s1,s2,'dns_egress'); fne=d(s1,s2,'kk_noop_eg'); dr=d(s1,s2,'drop_kfree_skb'); nt=d(s1,s2,'kk_noop_tp')
print(f"{b[-18:]:>18} dns eg {e[0]:5.0f} (noop {ne[0]:4.0f}) in {i[0]:5.0f} (noop {ni[0]:4.0f}) [{e[1]}/{i[1]}] | fast eg {fe[0]:4.0f} (noop {fne[0]:4.0f}) {fe[0]/fne[0]:.2f}x | drop {dr[0]:4.0f} (noop {nt[0]:4.0f}) {dr[0]/nt[0]:.2f}x [{dr[1]}]", flush=True)
PY
  done
done
