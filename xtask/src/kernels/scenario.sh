#!/bin/sh
# The checks of `cargo xtask kernels`, run as root in a qemu guest (from its
# /init) or natively on the host (under the host lock). It only runs things
# and reports what they printed; the xtask judges the results.
#
# Environment: KT (the ktrace binary), OUT (where results go: the guest's
# second serial port, or a file on the host), P (prefix of the network
# namespaces it creates), BB (a busybox binary, for nc), IP and TC (iproute2's
# ip and tc by path: the guest's busybox shell would run its own applets).
#
# Result format, one item per line:
#   @@KT begin NAME          then the text NAME printed, then
#   @@KT end NAME rc=N
#   @@KT note KEY VALUE...
# Every wait is bounded; the namespaces are removed at the end.

: "${KT:?}" "${OUT:?}" "${P:=ktk}" "${BB:=busybox}" "${IP:=ip}" "${TC:=tc}"
A="$P-a"
B="$P-b"
T=$(mktemp -d /tmp/ktk.XXXXXX)

note() { printf '@@KT note %s\n' "$*" >> "$OUT"; }

# emit NAME RC: the NAME.out and NAME.err files of $T as two blocks.
emit() {
    for s in out err; do
        printf '@@KT begin %s.%s\n' "$1" "$s" >> "$OUT"
        if [ -f "$T/$1.$s" ]; then cat "$T/$1.$s" >> "$OUT"; fi
        printf '\n@@KT end %s.%s rc=%s\n' "$1" "$s" "$2" >> "$OUT"
    done
}

# run NAME CMD...: runs CMD to completion (bounded by timeout), reports it.
run() {
    n=$1
    shift
    timeout 120 "$@" > "$T/$n.out" 2> "$T/$n.err"
    rc=$?
    emit "$n" "$rc"
    return "$rc"
}

# start NAME NETNS KTRACE-ARGS...: ktrace in the background, until it says
# it is attached (or exits, or 120 s pass). Sets KTPID.
start() {
    n=$1
    ns=$2
    shift 2
    "$IP" netns exec "$ns" "$KT" "$@" > "$T/$n.out" 2> "$T/$n.err" &
    KTPID=$!
    i=0
    while [ $i -lt 240 ]; do
        if grep -q 'attached' "$T/$n.err" 2>/dev/null; then
            return 0
        fi
        kill -0 "$KTPID" 2>/dev/null || return 1
        sleep 0.5
        i=$((i + 1))
    done
    return 1
}

# stop NAME: SIGINT to the background ktrace, wait (at most 60 s), report it.
stop() {
    kill -INT "$KTPID" 2>/dev/null
    i=0
    while kill -0 "$KTPID" 2>/dev/null && [ $i -lt 120 ]; do
        sleep 0.5
        i=$((i + 1))
    done
    kill -KILL "$KTPID" 2>/dev/null
    wait "$KTPID"
    emit "$1" "$?"
}

cleanup() {
    [ -n "$KTPID" ] && kill -KILL "$KTPID" 2>/dev/null
    [ -f "$T/dnsmasq.pid" ] && kill "$(cat "$T/dnsmasq.pid")" 2>/dev/null
    "$IP" netns del "$A" 2>/dev/null
    "$IP" netns del "$B" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT INT TERM

note kernel "$(uname -r)"
note began "$(cut -d' ' -f1 /proc/uptime)"

# --- 1. what doctor says, and what the verifier says per program ---
run doctor "$KT" doctor -o json
run programs "$KT" programs -o json
# The same with the kernel's debug logs on as `ktrace -vv --bpf-log` has them
# (debug level; trace adds per-connection-event lines whose verification alone
# outlasts the 120 s bound on 6.1 under TCG).
export RUST_LOG=warn,bpf=debug
run programs_log "$KT" --bpf-log programs -o json
unset RUST_LOG

# --- a network namespace pair: A serves DNS (dnsmasq) and drops TCP 8080 ---
"$IP" netns del "$A" 2>/dev/null
"$IP" netns del "$B" 2>/dev/null
"$IP" netns add "$A" && "$IP" netns add "$B" &&
    "$IP" link add va netns "$A" type veth peer name vb netns "$B" &&
    "$IP" -n "$A" addr add 10.253.7.1/24 dev va && "$IP" -n "$B" addr add 10.253.7.2/24 dev vb &&
    "$IP" -n "$A" link set va up && "$IP" -n "$B" link set vb up &&
    "$IP" -n "$A" link set lo up && "$IP" -n "$B" link set lo up
note netns_rc $?
"$IP" netns exec "$A" dnsmasq -u root --no-resolv --no-hosts --bind-interfaces \
    --listen-address=10.253.7.1 --address=/example.test/10.1.2.3 --pid-file="$T/dnsmasq.pid"
note dnsmasq_rc $?
printf 'table inet ktk {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 8080 drop\n }\n}\n' > "$T/drop.nft"
"$IP" netns exec "$A" nft -f "$T/drop.nft"
note nft_rc $?

dig_once() {
    "$IP" netns exec "$B" dig +tries=1 +time=2 @10.253.7.1 example.test A > "$T/dig.out" 2>&1 &
    DIGPID=$!
    wait "$DIGPID"
    note "$1" "$DIGPID" "$?"
}

# --- 2. ktrace dns: a dig transaction with its process and latency ---
if start dns "$B" dns -o json --netns "$B" --duration 120s; then
    dig_once dig_pid
    sleep 1
fi
stop dns

# --- 3. ktrace drops: an nftables drop (reason) and a refused connect ---
if start drops "$B" drops -o json --all --duration 120s; then
    "$IP" netns exec "$B" "$BB" nc -w 2 10.253.7.1 8080 < /dev/null > /dev/null 2>&1 &
    NC1=$!
    "$IP" netns exec "$B" "$BB" nc -w 2 10.253.7.1 8081 < /dev/null > /dev/null 2>&1
    wait "$NC1"
    note nc_pid "$NC1"
    sleep 1
fi
stop drops

# --- 4. the underlay programs on a veth: fingerprints seen ---
if start underlay "$B" drops -o json --underlay vb --duration 120s; then
    dig_once dig_underlay
    sleep 1
fi
stop underlay

# --- 5. SIGKILL, restart, stop: nothing left attached ---
CG=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
tcstate() {
    for d in ingress egress; do
        printf 'filter %s: ' "$d"
        "$IP" netns exec "$B" "$TC" filter show dev vb "$d" | tr '\n' ' '
        echo
    done
    printf 'qdisc: '
    "$IP" netns exec "$B" "$TC" qdisc show dev vb | tr '\n' ' '
    echo
}
tcstate > "$T/before.out" 2>&1
emit before 0
if start killed "$B" drops -o json --underlay vb --duration 120s; then
    kill -KILL "$KTPID"
fi
wait "$KTPID" 2>/dev/null
emit killed "$?"
tcstate > "$T/after_kill.out" 2>&1
emit after_kill 0
if start restarted "$B" drops -o json --underlay vb --duration 120s; then
    "$IP" netns exec "$B" dig +tries=1 +time=1 @10.253.7.1 example.test > /dev/null 2>&1
fi
stop restarted
{
    tcstate
    printf 'cgroup: '
    bpftool cgroup show "$CG" 2>&1 | tr '\n' ' '
    echo
    printf 'progs: '
    bpftool prog show 2>&1 | grep -E ' name (dns_egress|dns_ingress|drop_kfree_skb|conn_[a-z_]+|underlay_[a-z]+|probe_[a-z_]+) ' | tr '\n' ' '
    echo
} > "$T/after_stop.out" 2>&1
emit after_stop 0

note done "$(cut -d' ' -f1 /proc/uptime)"
