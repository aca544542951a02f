#!/usr/bin/env bash
# Where the DNS programs' in-kernel time goes on real packets (usage: dns-profile.sh BIN OUTDIR;
# root, under /tmp/ktrace-host.lock). `BIN record -w` attached, dnsperf (-c 4 -t 2) pinned to
# CPU 0 -> dnsmasq pinned to CPU 1 at QPS for SECS (as bench section 1), `perf record -a -g -e
# cpu-clock` during the load; then every sample whose call chain passes through dns_egress or
# dns_ingress is counted by its leaf function (SELF: the program's own instructions). Env: QPS
# (5000), SECS (5), FREQ (20000). Traffic stays between the two namespaces this script creates;
# they are deleted on exit, also on failure.
set -euo pipefail
BIN=$1; OUT=$2; QPS=${QPS:-5000}; SECS=${SECS:-5}
CLI=kdns-cli SRV=kdns-srv CIP=10.216.0.1 SIP=10.216.0.2
WORK=$(mktemp -d /tmp/kdnsp.XXXXXX)
down() { for ns in $CLI $SRV; do [ -e /run/netns/$ns ] || continue; for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done; sleep 0.2; ip netns del $ns 2>/dev/null || true; done; }
cleanup() { [ -n "${KT:-}" ] && kill -INT "$KT" 2>/dev/null && wait "$KT" 2>/dev/null || true; down; rm -rf "$WORK"; }
trap cleanup EXIT
down
ip netns add $CLI; ip netns add $SRV
ip -n $CLI link add kdns-c type veth peer name kdns-s netns $SRV
ip -n $CLI addr add $CIP/24 dev kdns-c; ip -n $SRV addr add $SIP/24 dev kdns-s
for ns in $CLI $SRV; do ip -n $ns link set lo up; done
ip -n $CLI link set kdns-c up; ip -n $SRV link set kdns-s up
ip netns exec $SRV taskset -c 1 dnsmasq --no-daemon --no-resolv --no-hosts --port=53 --listen-address=$SIP --bind-interfaces \
   --address=/example.com/10.1.2.3 --cache-size=1000 --log-facility=/dev/null >/dev/null 2>&1 &
for i in $(seq 200); do echo "q$i.example.com A"; done > $WORK/q.txt
"$BIN" record -w $WORK/x.pcapng 2>$WORK/err & KT=$!
for i in $(seq 200); do grep -q attached $WORK/err && break; sleep 0.1; done
sleep 0.5
mkdir -p "$OUT"
perf record -a -g -e cpu-clock -F "${FREQ:-20000}" -o "$OUT/perf.data" -- ip netns exec $CLI taskset -c 0 \
   dnsperf -s $SIP -d $WORK/q.txt -l "$SECS" -Q "$QPS" -c 4 -q 200 -t 2 > "$OUT/dnsperf.out" 2>&1 || true
perf script -F cpu,ip,sym -i "$OUT/perf.data" 2>/dev/null > "$OUT/script.txt"
python3 - "$OUT/script.txt" <<'PY'
import sys,collections,re
n=0; leaf={'dns_egress':collections.Counter(),'dns_ingress':collections.Counter()}
for s in open(sys.argv[1]).read().split('\n\n'):
    lines=[l.strip() for l in s.strip().split('\n') if l.strip()]
    if len(lines)<2: continue
    n+=1
    frames=[(l.split(None,1)+['?'])[1] for l in lines[1:]]
    for i,f in enumerate(frames):
        m=re.search(r'bpf_prog_\w+_(dns_egress|dns_ingress)',f)
        if m:
            leaf[m.group(1)][re.sub(r'\+0x.*','',frames[0]) if i else 'SELF']+=1
            break
print('samples',n)
for p,c in leaf.items():
    t=sum(c.values()) or 1; print(p,t)
    for k,v in c.most_common(12): print(f'   {v:6d} {v/t*100:5.1f}% {k}')
PY
