#!/bin/sh
# run.sh - runs the libFuzzer harnesses built by fuzz.mk: a fixed number of
# executions each (smoke, for CI) or a time budget each (long, by hand).
#
#   run.sh smoke OUT SRCDIR     FUZZ_RUNS (default 20000) runs per harness
#   run.sh long  OUT SRCDIR     FUZZ_TIME (default 600) seconds per harness
#
# FUZZ_TARGETS picks harnesses (default: all), FUZZ_SEED fixes libFuzzer's
# seed (default: a new one each run, printed), FUZZ_ARGS adds options.
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

targets=${FUZZ_TARGETS:-metadata config listener stream-target \
stream-target-uds stream-initiator}
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

# The uds target takes the tcp target's seeds: one wire, two sockets.
seeds() {
    case $1 in
    stream-target-uds) echo "$src/corpus/stream-target" ;;
    *) echo "$src/corpus/$1" ;;
    esac
}

dict() {
    case $1 in
    stream-*) echo "$src/stream.dict" ;;
    *) echo "$src/$1.dict" ;;
    esac
}

failed=
for t in $targets; do
    bin=$out/fuzz-$t
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin is not built (make fuzz-build)" >&2
        exit 2
    fi
    mkdir -p "$out/artifacts/$t" "$out/logs"
    if [ "$mode" = smoke ]; then
        work=$out/smoke/$t
        rm -rf "$work"
        budget="-runs=$runs"
    else
        work=$out/corpus/$t
        budget="-max_total_time=$time_s"
    fi
    mkdir -p "$work"
    log=$out/logs/$t.txt
    stamp=$out/logs/$t.start
    : >"$stamp"
    set -- -max_len="$(max_len "$t")" -timeout=60 -rss_limit_mb=2048 \
        -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 \
        -close_fd_mask=2 "$budget"
    d=$(dict "$t")
    [ -f "$d" ] && set -- "$@" -dict="$d"
    [ -n "${FUZZ_SEED:-}" ] && set -- "$@" -seed="$FUZZ_SEED"
    # shellcheck disable=SC2086
    "$bin" "$@" ${FUZZ_ARGS:-} "$work" "$(seeds "$t")" >"$log" 2>&1
    rc=$?
    seed=$(sed -n 's/^INFO: Seed: //p' "$log" | head -n 1)
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)
    cov=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1 |
        sed -n 's/.*\(cov: [0-9]*\).*\(corp: [^ ]*\).*/\1 \2/p')
    if [ "$rc" -eq 0 ]; then
        echo "fuzz $t: ok, ${done_line:-?} (seed $seed, $cov)"
    else
        echo "fuzz $t: FAILED (exit $rc, seed $seed); log: $log"
        grep -E 'FINDING|SUMMARY|ERROR|^    #[0-9]' "$log" | head -n 40
        find "$out/artifacts/$t" -type f -newer "$stamp" | while read -r a; do
            echo "  input: $a (reproduce: $bin $a)"
        done
        failed="$failed $t"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed" >&2
    exit 1
fi
exit 0
