#!/bin/sh
# run.sh - runs the libFuzzer harnesses built by fuzz.mk: a fixed number of
# executions each (smoke, for CI) or a time budget each (long, by hand).
#
#   run.sh smoke OUT SRCDIR     FUZZ_RUNS (default 20000) runs per harness
#   run.sh long  OUT SRCDIR     FUZZ_TIME (default 600) seconds per harness
#
# FUZZ_TARGETS picks harnesses (default: all), FUZZ_JOBS how many run at
# once (default 2), FUZZ_SEED fixes libFuzzer's seed (default: a new one
# each run, printed), FUZZ_ARGS adds options.
# Seeds come from SRCDIR/corpus/<target>; what a run finds goes to
# OUT/corpus/<target> (long) or a scratch directory (smoke), never into
# the source tree.  A crash, leak, hang or failed check exits non-zero
# and leaves its input in OUT/artifacts/<target>/.
set -u

mode=${1:-}
out=${2:-}
src=${3:-}
case $mode in
smoke | long) ;;
*)
    echo "usage: $0 smoke|long OUT SRCDIR" >&2
    exit 2
    ;;
esac
[ -n "$out" ] && [ -n "$src" ] || { echo "usage: $0 smoke|long OUT SRCDIR" >&2; exit 2; }

targets=${FUZZ_TARGETS:-metadata config listener listener-auth stream-target \
stream-target-uds stream-target-auth stream-initiator}
runs=${FUZZ_RUNS:-20000}
time_s=${FUZZ_TIME:-600}

# Longest input per harness: enough for every seed (a 16 KiB READ answer
# for the initiator), small enough to stay fast.
max_len() {
    case $1 in
    config) echo 1024 ;;
    metadata) echo 8192 ;;
    stream-initiator) echo 20000 ;;
    *) echo 4096 ;;
    esac
}

# The uds and authenticated targets take the tcp target's seeds: one wire.
seeds() {
    case $1 in
    stream-target-*) echo "$src/corpus/stream-target" ;;
    *) echo "$src/corpus/$1" ;;
    esac
}

dict() {
    case $1 in
    stream-*) echo "$src/stream.dict" ;;
    listener-*) echo "$src/listener.dict" ;;
    *) echo "$src/$1.dict" ;;
    esac
}

# One harness: its log, its exit status in $t.rc.
run_one() {
    t=$1
    bin=$out/fuzz-$t
    log=$out/logs/$t.txt
    stamp=$out/logs/$t.start
    : >"$stamp"
    if [ "$mode" = smoke ]; then
        work=$out/smoke/$t
        rm -rf "$work"
        budget="-runs=$runs"
    else
        work=$out/corpus/$t
        budget="-max_total_time=$time_s"
    fi
    mkdir -p "$work" "$out/artifacts/$t"
    set -- -max_len="$(max_len "$t")" -timeout=60 -rss_limit_mb=2048 \
        -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 \
        -close_fd_mask=2 "$budget"
    d=$(dict "$t")
    [ -f "$d" ] && set -- "$@" -dict="$d"
    [ -n "${FUZZ_SEED:-}" ] && set -- "$@" -seed="$FUZZ_SEED"
    # shellcheck disable=SC2086
    "$bin" "$@" ${FUZZ_ARGS:-} "$work" "$(seeds "$t")" >"$log" 2>&1
    echo $? >"$out/logs/$t.rc"
}

report() {
    t=$1
    bin=$out/fuzz-$t
    log=$out/logs/$t.txt
    rc=$(cat "$out/logs/$t.rc" 2>/dev/null || echo 1)
    seed=$(sed -n 's/^INFO: Seed: //p' "$log" | head -n 1)
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)
    cov=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1 |
        sed -n 's/.*\(cov: [0-9]*\).*\(corp: [^ ]*\).*/\1 \2/p')
    if [ "$rc" -eq 0 ]; then
        echo "fuzz $t: ok, ${done_line:-?} (seed $seed, $cov)"
        return 0
    fi
    echo "fuzz $t: FAILED (exit $rc, seed $seed); log: $log"
    grep -E 'FINDING|SUMMARY|ERROR|^    #[0-9]' "$log" | head -n 40
    find "$out/artifacts/$t" -type f -newer "$out/logs/$t.start" |
        while read -r a; do
            echo "  input: $a (reproduce: $bin $a)"
        done
    return 1
}

mkdir -p "$out/logs"
for t in $targets; do
    if [ ! -x "$out/fuzz-$t" ]; then
        echo "fuzz: $out/fuzz-$t is not built (make fuzz-build)" >&2
        exit 2
    fi
    rm -f "$out/logs/$t.rc"
done
# FUZZ_JOBS harnesses at once (default 2: each is mostly one thread), in
# groups dealt round-robin; the reports follow in order.
jobs=${FUZZ_JOBS:-2}
g=0
while [ "$g" -lt "$jobs" ]; do
    (
        i=0
        for t in $targets; do
            [ $((i % jobs)) -eq "$g" ] && run_one "$t"
            i=$((i + 1))
        done
    ) &
    g=$((g + 1))
done
wait

failed=
for t in $targets; do
    report "$t" || failed="$failed $t"
done
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed" >&2
    exit 1
fi
exit 0
