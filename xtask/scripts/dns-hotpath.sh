#!/usr/bin/env bash
# One resolver pair, alone, in under a minute: dnsperf (CPU 0, netns khp-cli)
# against dnsmasq (CPU 1, netns khp-srv), with ktrace off, `ktrace dns -o json
# > /dev/null` and `ktrace dns -o json --summary > /dev/null`, in interleaved
# rounds. Prints, per mode: qps at saturation, ktrace userspace CPU
# (user+system, from /proc/PID/task/*/schedstat) per completed query, events read/lost, and at half
# the untraced saturation rate p50/p99 and their ratio to the untraced run.
#
# The measurement loop of issue #18's userspace hot-path work (section 2 of
# `cargo xtask bench` measures the same setup with every mode; this is the
# quick one to run after each change). Needs root and the host lock:
#   flock /tmp/ktrace-host.lock xtask/scripts/dns-hotpath.sh target/release/ktrace
# Env: ROUNDS (3), SECS (3 s per run), MODES ("off json summary"; also
# "normal" = --sched-normal, "agent-normal" = the agent with --sched-normal, "agent-batch" = that under `chrt -b 0` (SCHED_BATCH), "agent-batch19" = and nice 19 (the modes of the retired --sched-idle and
# --no-catch-up are gone: both flags are no-ops since issue 18), "agent" = `ktrace agent --metrics` scraped every second;
# "base-json" etc. run the binary in $BASE for a side-by-side before/after),
# HALF=0 skips the latency part, PERF=FILE records `perf record -g` of the
# json mode's (PERF_MODE) saturation run of the last round into FILE.
# PERF_EVENT=EV samples that event instead (e.g. page-faults: where fresh memory is touched).
# AGENT_ARGS adds arguments to the agent modes (e.g. "--history-mib 4").
# STAT_EVENT=EV counts another perf event per query in the instructions
# column (e.g. page-faults, a software event, where the machine has no PMU).
# HALF_QPS=N skips the saturation part and measures latency at N queries/s.
# THREADS=1 prints, per run, each ktrace thread's CPU ms, switches-in and
# nonvoluntary switches over the load (to stderr, "[threads]" lines).
# Modes also: "record" = `ktrace record -w FILE` (its file deleted after each run).
# The half-load table adds the machine's idle share (both CPUs) and
# ktrace's switches-in per second (schedstat).
# QPS=N replaces the saturation part by runs at a fixed N queries/s (the CPU
# per query then compares at one rate across modes).
# Traffic stays between the two namespaces this script creates; they are
# deleted on exit, also on failure.
set -euo pipefail

BIN=$(realpath "${1:?usage: dns-hotpath.sh KTRACE_BIN}")
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
MODES=${MODES:-"off json summary"}
HALF=${HALF:-1}
PERF=${PERF:-}
CLI=khp-cli SRV=khp-srv CIP=10.214.0.1 SIP=10.214.0.2
WORK=$(mktemp -d /tmp/khp.XXXXXX)

down() {
    for ns in $CLI $SRV; do
        [ -e /run/netns/$ns ] || continue
        for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        for _ in $(seq 50); do [ -z "$(ip netns pids $ns 2>/dev/null)" ] && break; sleep 0.05; done
        ip netns del $ns 2>/dev/null || true
    done
}
cleanup() {
    [ -n "${SCRAPER:-}" ] && kill "$SCRAPER" 2>/dev/null || true
    [ -n "${KT:-}" ] && kill -INT "$KT" 2>/dev/null && wait "$KT" 2>/dev/null || true
    down
    rm -rf "$WORK"
}
trap cleanup EXIT
down
ip netns add $CLI
ip netns add $SRV
ip -n $CLI link add khp-c type veth peer name khp-s netns $SRV
ip -n $CLI addr add $CIP/24 dev khp-c
ip -n $SRV addr add $SIP/24 dev khp-s
for ns in $CLI $SRV; do ip -n $ns link set lo up; done
ip -n $CLI link set khp-c up txqueuelen 10000
ip -n $SRV link set khp-s up txqueuelen 10000

for i in $(seq 0 199); do echo "host$i.bench.test A"; done >"$WORK/q.txt"
taskset -c 1 ip netns exec $SRV dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --pid-file= --cache-size=0 --log-facility=/dev/null --user=root --listen-address=$SIP \
    --local=/bench.test/ --address=/bench.test/10.0.0.1 2>"$WORK/dnsmasq.err" &
for _ in $(seq 100); do ip netns exec $SRV ss -uln | grep -q "$SIP:53" && break; sleep 0.1; done
# `ip netns exec` forks: the resolver is the dnsmasq inside the namespace.
SRVPID=
for p in $(ip netns pids $SRV); do [ "$(cat /proc/"$p"/comm 2>/dev/null)" = dnsmasq ] && SRVPID=$p; done
for _ in $(seq 100); do ip netns exec $SRV ss -uln | grep -q "$SIP:53" && break; sleep 0.1; done

# CPU time of every thread of the process in ns (schedstat: user + system,
# at ns resolution; /proc/PID/stat's clock ticks are 10 ms, too coarse here).
cpu() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{t += $1} END {printf "%.0f", t}'; }
# Time the resolver's threads waited runnable for a CPU (schedstat field 2,
# ns): what a tracer competing for its core adds to every answer.
waited() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{t += $2} END {printf "%.0f", t}'; }
# Times the process's threads were switched in (schedstat field 3).
slices() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{t += $3} END {printf "%.0f", t}'; }
# "tid comm run_ns switches nonvoluntary" per thread of the process.
threads() {
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(tr ' ' _ <"$t/comm") $(awk '{print $1, $3}' "$t/schedstat") $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")"
    done 2>/dev/null
}
# Idle jiffies of CPUs 0 and 1 together (/proc/stat idle + iowait).
idle() { awk '/^cpu[01] / {t += $5 + $6} END {printf "%.0f", t}' /proc/stat; }
# User and system clock ticks of the process ("utime stime", /proc/PID/stat).
ustime() { sed 's/.*) //' /proc/"$1"/stat 2>/dev/null | awk '{print $12, $13}'; }

# dnsperf SECS [QPS] -> "qps completed" (+ latencies in $WORK/lat when QPS given)
perfrun() {
    local args=(-s $SIP -d "$WORK/q.txt" -l "$1" -c 4 -q 200 -t 2)
    [ -n "${2:-}" ] && args+=(-Q "$2" -v)
    timeout $(($1 + 20)) taskset -c 0 ip netns exec $CLI dnsperf "${args[@]}" >"$WORK/dp.out" 2>&1
    if [ -n "${2:-}" ]; then awk '/^> /{print $NF}' "$WORK/dp.out" | sort -g >"$WORK/lat"; fi
    awk '/Queries per second:/{q=$4} /Queries completed:/{c=$3} END{print q, c}' "$WORK/dp.out"
}
pct() { awk -v p="$1" '{a[NR]=$1} END{i=int(NR*p/100); if(i<1)i=1; printf "%.1f", a[i]*1e6}' "$WORK/lat"; }

start_kt() {
    local m=$1 bin=$BIN
    KT=
    [ "$m" = off ] && return
    # "base-MODE": the same mode with the binary in $BASE (side-by-side before/after).
    if [ "${m#base-}" != "$m" ]; then
        m=${m#base-}
        bin=$(realpath "${BASE:?base- modes need BASE=KTRACE_BIN}")
    fi
    # "MODE@VAR=V,VAR2=W": the mode with those environment variables (knobs).
    local envs=()
    if [ "${m#*@}" != "$m" ]; then
        IFS=, read -r -a envs <<<"${m#*@}"
        m=${m%%@*}
    fi
    local pre=() post=(dns -o json) wrap=()
    case $m in
    summary) post+=(--summary) ;;
    normal) pre+=(--sched-normal) ;;
    record) post=(record -w "$WORK/rec.pcapng") ;;
    agent | agent-normal | agent-batch | agent-batch19)
        [ "$m" != agent ] && pre+=(--sched-normal)
        [ "$m" = agent-batch ] && wrap=(chrt -b 0)
        [ "$m" = agent-batch19 ] && wrap=(chrt -b 0 nice -n 19)
        APORT=$((20000 + RANDOM % 20000))
        post=(--no-kube-api agent --grace 0s --metrics 127.0.0.1:$APORT --listen "unix:$WORK/agent.sock"
            --capture-dir "$WORK/captures" ${AGENT_ARGS:-})
        ;;
    esac
    env "${envs[@]}" "${wrap[@]}" "$bin" "${pre[@]}" "${post[@]}" >/dev/null 2>"$WORK/kt.err" &
    KT=$!
    for _ in $(seq 200); do
        if grep -q attached "$WORK/kt.err"; then
            # Prometheus-style scraping, every second (its cost is the agent's).
            if [ "${m#agent}" != "$m" ]; then
                (for _ in $(seq 600); do sleep 1; curl -s -m 2 "http://127.0.0.1:$APORT/metrics" >/dev/null || true; done) &
                SCRAPER=$!
            fi
            return
        fi
        sleep 0.05
    done
    echo "ktrace did not attach: $(cat "$WORK/kt.err")" >&2
    exit 1
}
stop_kt() {
    [ -z "$KT" ] && { echo "- -"; return; }
    [ -n "${SCRAPER:-}" ] && { kill "$SCRAPER" 2>/dev/null; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=; }
    kill -INT "$KT"
    # `wait` alone can return before the exit line is on disk: poll for it.
    for _ in $(seq 400); do grep -q "^ktrace\( agent\)\?: stopped\|^ktrace record: Nothing\|^ktrace record: Lost" "$WORK/kt.err" && break; sleep 0.05; done
    wait "$KT" 2>/dev/null || true
    KT=
    rm -f "$WORK/rec.pcapng"
    if grep -q "^ktrace record: wrote" "$WORK/kt.err"; then
        local w l
        w=$(sed -n 's/^ktrace record: wrote \([0-9]*\) records.*/\1/p' "$WORK/kt.err")
        l=$(sed -n 's/^ktrace record: Lost \([0-9]*\) event.*/\1/p' "$WORK/kt.err")
        echo "$w ${l:-0}"
        return
    fi
    sed -n "s/^ktrace\( agent\)\?: stopped: \([0-9]*\) events read, \([0-9]*\) lost.*/\2 \3/p" "$WORK/kt.err" | grep . || { echo "- -"; tail -3 "$WORK/kt.err" | sed "s/^/[kt] /" >&2; }
}

# one MODE SECS [QPS] -> "mode qps tracer_us_per_query read lost p50 p99 ins srv_wait_us_per_query peak_rss_kib"
one() {
    local m=$1 secs=$2 qps=${3:-} perf_pid=
    start_kt "$m"
    local c0=0 c1=0 w0 w1 s0=0 s1=0 i0 i1 t0 t1
    local u0="0 0" u1="0 0"
    [ -n "$KT" ] && c0=$(cpu "$KT") && s0=$(slices "$KT") && u0=$(ustime "$KT")
    [ -n "$KT" ] && [ "${THREADS:-0}" = 1 ] && threads "$KT" >"$WORK/th0"
    w0=$(waited "$SRVPID")
    i0=$(idle)
    t0=$(date +%s%N)
    if [ -n "$PERF" ] && [ "$m" = "${PERF_MODE:-json}" ] && [ "$LAST" = 1 ]; then
        perf record ${PERF_EVENT:+-e $PERF_EVENT} -F ${PERF_FREQ:-10000} ${PERF_CG:--g} -o "$PERF" -p "$KT" 2>/dev/null >/dev/null &
        perf_pid=$!
    fi
    # Instructions retired in ktrace's userspace: unlike CPU time, not
    # inflated by other work on the machine competing for caches and cores.
    local stat_pid=
    if [ -n "$KT" ]; then
        perf stat -e "${STAT_EVENT:-instructions:u}" -x, -o "$WORK/pstat" -p "$KT" 2>/dev/null &
        stat_pid=$!
    fi
    read -r q n < <(perfrun "$secs" "$qps")
    [ -n "$KT" ] && c1=$(cpu "$KT") && s1=$(slices "$KT") && u1=$(ustime "$KT")
    if [ -n "$KT" ] && [ "${THREADS:-0}" = 1 ]; then
        threads "$KT" >"$WORK/th1"
        awk -v m="$m" -v secs="$secs" 'NR == FNR {r[$1] = $3; s[$1] = $4; n[$1] = $5; next}
            {printf "[threads] %s %s %s: %.1f ms, %.0f switches/s, %.0f nonvoluntary/s\n", m, $1, $2, ($3 - r[$1]) / 1e6, ($4 - s[$1]) / secs, ($5 - n[$1]) / secs}' \
            "$WORK/th0" "$WORK/th1" >&2
    fi
    w1=$(waited "$SRVPID")
    i1=$(idle)
    t1=$(date +%s%N)
    [ -n "$perf_pid" ] && { kill -INT $perf_pid; wait $perf_pid || true; }
    local ins=-
    if [ -n "$stat_pid" ]; then
        kill -INT $stat_pid
        wait $stat_pid 2>/dev/null || true
        ins=$(awk -F, -v n="$n" -v ev="${STAT_EVENT:-instructions}" 'index($0, ev) && $1 ~ /^[0-9.]+$/ {printf (ev == "instructions" ? "%.2f" : "%.4f"), $1 / n}' "$WORK/pstat")
    fi
    # Peak resident set of the tracer so far (KiB; last column).
    local hwm=-
    [ -n "$KT" ] && hwm=$(awk '/^VmHWM:/ {print $2}' /proc/"$KT"/status 2>/dev/null || echo -)
    local us
    us=$(awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN{printf "%.2f", (b-a)/1000/n}')
    local ev
    ev=$(stop_kt)
    local lat="- -"
    [ -n "$qps" ] && lat="$(pct 50) $(pct 99)"
    local wait
    wait=$(awk -v a="$w0" -v b="$w1" -v n="$n" 'BEGIN{printf "%.2f", (b-a)/1000/n}')
    # Times the idle-priority reader was raised to normal priority (catch-up).
    local boosts=-
    [ "$m" != off ] && boosts=$(sed -n 's/.*raised to normal priority \([0-9]*\) time.*/\1/p' "$WORK/kt.err" | tail -1)
    # Idle share of the two CPUs (%, USER_HZ jiffies) and ktrace's switches-in per second.
    local idlep swps
    idlep=$(awk -v a="$i0" -v b="$i1" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", 100*(b-a)/hz/((t1-t0)/1e9)/2}')
    swps=$(awk -v a="$s0" -v b="$s1" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.0f", (b-a)/((t1-t0)/1e9)}')
    local bms
    bms=-
    # Time spent raised, all boosts together (ms).
    [ "$m" != off ] && bms=$(sed -n 's/.*to catch up (\([0-9]*\) ms in all).*/\1/p' "$WORK/kt.err" | tail -1)
    # ktrace's user and system share of its CPU time (%; 10 ms ticks, coarse).
    local usr
    usr=$(echo "$u0 $u1" | awk '{u = $3 - $1; s = $4 - $2; printf "%.0f", (u + s) ? 100 * u / (u + s) : 0}')
    echo "$m $q $us $ev $lat ${ins:--} $wait ${hwm:--} ${boosts:--} $idlep $swps ${bms:--} $usr"
}

ip netns exec $CLI true
perfrun 1 >/dev/null # warm-up
: >"$WORK/sat"
# HALF_QPS=N: skip the saturation part and measure latency at N queries/s.
[ -n "${HALF_QPS:-}" ] && SATROUNDS=0 || SATROUNDS=$ROUNDS
for r in $(seq "$SATROUNDS"); do
    LAST=$([ "$r" = "$ROUNDS" ] && echo 1 || echo 0)
    set -- $MODES
    k=$(( (r - 1) % $# ))
    ordered=("${@:k+1}" "${@:1:k}")
    for m in "${ordered[@]}"; do one "$m" "$SECS" "${QPS:-}" | tee -a "$WORK/sat" >&2; done
done
stats() { python3 - "$@" <<'PY'
import sys, statistics as st
kind, path, modes = sys.argv[1], sys.argv[2], sys.argv[3].split()
rows = [l.split() for l in open(path) if l.strip()]
num = lambda x: float(x) if x not in ("-", "") else 0.0
med = lambda xs: st.median(xs) if xs else float("nan")
if kind == "sat":
    print("mode qps tracer_us/query user_instructions/query events_read events_lost srv_wait_us/query peak_rss_kib boosts")
    for m in modes:
        r = [x for x in rows if x[0] == m]
        print(m, round(med([num(x[1]) for x in r])), "%.2f" % med([num(x[2]) for x in r]),
              "%.2f" % med([num(x[7]) for x in r]),
              int(sum(num(x[3]) for x in r)), int(sum(num(x[4]) for x in r)),
              "%.2f" % med([num(x[8]) for x in r if len(x) > 8]),
              round(med([num(x[9]) for x in r if len(x) > 9])), round(med([num(x[10]) for x in r if len(x) > 10])))
else:
    print("mode p50_us p99_us p50_ratio p99_ratio tracer_us/query user_instructions/query events_lost srv_wait_us/query boosts idle_pct kt_switches/s boosted_ms")
    rounds = [rows[i:i + len(modes)] for i in range(0, len(rows), len(modes))]
    for m in modes:
        a50, a99, p50, p99, us, ins, lost, wt, bo, idl, sw, bms = [], [], [], [], [], [], 0, [], [], [], [], []
        for rd in rounds:
            off = [x for x in rd if x[0] == "off"]
            for x in rd:
                if x[0] != m:
                    continue
                p50.append(num(x[5])); p99.append(num(x[6])); us.append(num(x[2])); ins.append(num(x[7])); lost += num(x[4])
                wt.append(num(x[8]) if len(x) > 8 else 0.0)
                bo.append(num(x[10]) if len(x) > 10 else 0.0)
                idl.append(num(x[11]) if len(x) > 11 else 0.0)
                sw.append(num(x[12]) if len(x) > 12 else 0.0)
                bms.append(num(x[13]) if len(x) > 13 else 0.0)
                if off:
                    a50.append(num(x[5]) / num(off[0][5])); a99.append(num(x[6]) / num(off[0][6]))
        rng = lambda xs: "[%.2f-%.2f]" % (min(xs), max(xs)) if xs else "[]"
        print(m, "%.1f %.1f %.2f%s %.2f%s %.2f %.2f %d %.2f %.0f %.1f %.0f %.0f" % (med(p50), med(p99), med(a50), rng(a50), med(a99), rng(a99), med(us), med(ins), lost, med(wt), med(bo), med(idl), med(sw), med(bms)))
PY
}
if [ "$SATROUNDS" != 0 ]; then
    echo "## saturation ($ROUNDS rounds × ${SECS}s; medians)"
    stats sat "$WORK/sat" "$MODES"
fi
[ "$HALF" = 1 ] || exit 0
[ -n "${HALF_QPS:-}" ] && half=$HALF_QPS || half=$(python3 -c 'import sys,statistics as s; print(int(s.median([float(l.split()[1]) for l in open(sys.argv[1]) if l.startswith("off ")])/2))' "$WORK/sat")
: >"$WORK/half"
for r in $(seq "$ROUNDS"); do
    LAST=0
    set -- $MODES
    k=$(( (r - 1) % $# ))
    ordered=("${@:k+1}" "${@:1:k}")
    for m in "${ordered[@]}"; do one "$m" "$SECS" "$half" | tee -a "$WORK/half" >&2; done
done
echo "## half load ($half qps; medians of per-round ratios to that round's off run)"
stats half "$WORK/half" "$MODES"
