#!/bin/sh
# compare-ofi.sh - the ofi figures of docs/performance.md (issue 12) in one run:
# xfer-bench --backend ofi against bench/ofi-rma, the same RMA loop on raw
# libfabric, same provider, taking turns.
#
# usage: bench/compare-ofi.sh [--baseline-only] [BUILD_DIR] [ROUNDS]
#        (default: ./build, 3)
# Needs a build with libfabric (BUILD_OFI: bench/ofi-rma) and, unless
# --baseline-only, the ofi plugin (plugins/ofi/xfer_ofi.la); without it the
# script stops with a sentence saying so.  On "tcp;ofi_rxm" and shm, for
# each point the tools take turns for ROUNDS rounds and each tool's median
# is compared (a burst of noise on a shared machine then hits one sample
# of every tool alike):
#   1. WRITE and READ: 64 KiB, 1 MiB, 16 MiB, 64 MiB one block a post;
#      64Kx16: one request of 16 blocks against ofi-rma -b 16 (16 posted,
#      then all awaited); 64Kx16p: --pipeline-depth 16 (16 requests in
#      flight) against ofi-rma -b 16 --window (16 in flight, each reposted
#      as it completes).  Goal (issue 12): xfer at least 0.90x.
#   2. 8 B WRITE and READ to completion, median us.
#   3. bench/post-overhead: prepared post of 1024 x 4 KiB on ofi, ns per
#      descriptor, against ofi-rma's posting alone of 1024 x 4 KiB
#      fi_writemsg (the provider's own cost per segment: the floor).
# Both tools take the provider's first domain unless OFI_TCP_DOMAIN names
# one (e.g. lo): then ofi-rma gets -d and the xfer spec domain=.  GB/s are
# 10^9 B/s.  Every sample is printed after each table.
set -eu

. "$(cd "$(dirname "$0")" && pwd)/compare-lib.sh"
baseline_only=0
if [ "${1:-}" = --baseline-only ]; then
    baseline_only=1
    shift
fi
build=${1:-build}
rounds=${2:-3}
cd "$build"
export XFER_PLUGIN_PATH="$PWD/plugins/ofi:$PWD/plugins/tcp"
[ -x bench/ofi-rma ] || {
    echo "compare-ofi.sh: $PWD/bench/ofi-rma is not built: configure found no libfabric (install libfabric-dev), or run make." >&2
    exit 1
}
if [ $baseline_only = 0 ] && [ ! -e plugins/ofi/xfer_ofi.la ]; then
    echo "compare-ofi.sh: the ofi plugin is not built ($PWD/plugins/ofi/xfer_ofi.la is missing): xfer-bench --backend ofi cannot run.  Build it, or run with --baseline-only to measure bench/ofi-rma alone." >&2
    exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Read through eval below.
# shellcheck disable=SC2034
{
    PROV_tcp='tcp;ofi_rxm'
    PROV_shm=shm
    DOM_tcp=${OFI_TCP_DOMAIN:-}
    DOM_shm=
}

# Iterations for SIZE bytes per post over NET: about 256 MiB a sample on
# tcp, 1 GiB on shared memory, at least 16; the same for both tools.
iters() {
    if [ "$2" = tcp ]; then n=$((268435456 / $1)); else n=$((1073741824 / $1)); fi
    [ $n -lt 16 ] && n=16
    echo $n
}
warm() {
    w=$(($1 / 10))
    [ $w -lt 2 ] && w=2
    echo $w
}

# base NET OUTFILE ARGS...: one ofi-rma run.  (Functions share the
# script's variables: theirs are named bp, bd, bf and xp, xd, xf.)
base() {
    eval "bp=\$PROV_$1 bd=\$DOM_$1"
    bf=$2
    shift 2
    # shellcheck disable=SC2154
    ./bench/ofi-rma -p "$bp" ${bd:+-d "$bd"} "$@" > "$bf" 2>&1 || {
        echo "ofi-rma failed:" >&2
        cat "$bf" >&2
    }
}

# xb NET OUTFILE ARGS...: one xfer-bench run (none with --baseline-only).
xb() {
    eval "xp=\$PROV_$1 xd=\$DOM_$1"
    xf=$2
    shift 2
    : > "$xf"
    [ $baseline_only = 1 ] && return 0
    # shellcheck disable=SC2154
    ./tools/xfer-bench --backend "ofi:provider=$xp${xd:+,domain=$xd}" --no-progress \
        --large-block-iter-factor 1 --alloc malloc "$@" > "$xf" 2>&1 || {
        echo "xfer-bench failed:" >&2
        cat "$xf" >&2
    }
}

# xfer / baseline, or - with --baseline-only.
xratio() {
    if [ $baseline_only = 1 ]; then echo -; else ratio "$1" "$2"; fi
}

echo "# compare-ofi.sh $(date -u '+%Y-%m-%d %H:%M UTC'), libfabric $(fi_info --version 2>/dev/null | awk '/^libfabric:/ { print $2 }'), rounds $rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
[ $baseline_only = 1 ] && echo "# --baseline-only: bench/ofi-rma alone, no xfer-bench"
for net in tcp shm; do
    base $net "$out/h" -s 4K -n 16 -w 2
    echo "# $net: $(sed -n '1,2s/^# //p' "$out/h" | paste -sd ';' -)"
done
echo
echo "== bandwidth (medians of $rounds rounds, GB/s; ratio = xfer / ofi-rma, goal >= 0.90)"
echo "   64Kx16: one request of 16 blocks / 16 posted, then all awaited;"
echo "   64Kx16p: 16 requests in flight (--pipeline-depth 16) / ofi-rma --window"
printf "%-4s %-6s %-8s %9s %9s %7s\n" prov op point ofi-rma xfer ratio
: > "$out/samples"
for net in tcp shm; do
    for op in WRITE READ; do
        for point in 64K 1M 16M 64M 64Kx16 64Kx16p; do
            case $point in
            64K) s=65536 b=1 ;;
            1M) s=1048576 b=1 ;;
            16M) s=16777216 b=1 ;;
            64M) s=67108864 b=1 ;;
            64Kx16) s=65536 b=16 ;;
            64Kx16p) s=65536 b=16 ;;
            esac
            # A post moves b blocks, except in the pipelined point, where
            # each post (request) is one block, as ucx_perftest -O counts.
            if [ $point = 64Kx16 ]; then
                n=$(iters $((s * b)) $net)
            else
                n=$(iters "$s" $net)
            fi
            w=$(warm "$n")
            bs='' xs=''
            r=0
            while [ $r -lt "$rounds" ]; do
                f="$out/$net-$op-$point-$r"
                case $point in
                64Kx16)
                    xb $net "$f.x" --op $op --start-block-size "$s" --max-block-size "$s" \
                        --start-batch-size 16 --max-batch-size 16 --num-iter "$n" --warmup-iter "$w"
                    base $net "$f.b" -o $op -s "$s" -b 16 -n "$n" -w "$w" ;;
                64Kx16p)
                    xb $net "$f.x" --op $op --start-block-size "$s" --max-block-size "$s" \
                        --start-batch-size 16 --max-batch-size 16 --pipeline-depth 16 \
                        --num-iter "$n" --warmup-iter "$w"
                    base $net "$f.b" -o $op -s "$s" -b 16 --window -n "$n" -w "$w" ;;
                *)
                    xb $net "$f.x" --op $op --start-block-size "$s" --max-block-size "$s" \
                        --num-iter "$n" --warmup-iter "$w"
                    base $net "$f.b" -o $op -s "$s" -n "$n" -w "$w" ;;
                esac
                v=$(field "$s" "$f.b" gbps)
                bs="$bs ${v:-0}"
                if [ $baseline_only = 0 ]; then
                    v=$(field "$s" "$f.x" gbps)
                    xs="$xs ${v:-0}"
                fi
                r=$((r + 1))
            done
            # shellcheck disable=SC2086
            m=$(median $bs) x=-
            # shellcheck disable=SC2086
            [ -n "$xs" ] && x=$(median $xs)
            printf "%-4s %-6s %-8s %9s %9s %7s\n" $net $op $point "$m" "$x" "$(xratio "$x" "$m")"
            echo "   $net $op $point samples: ofi-rma$bs${xs:+ | xfer$xs}" >> "$out/samples"
        done
    done
done
echo
echo "== every sample (GB/s), in the order of the table"
cat "$out/samples"

echo
echo "== 8 B to completion, median us (medians of $rounds rounds; ratio = xfer / ofi-rma)"
printf "%-4s %-6s %9s %9s %7s\n" prov op ofi-rma xfer ratio
: > "$out/samples"
for net in tcp shm; do
    for op in WRITE READ; do
        bs='' xs=''
        r=0
        while [ $r -lt "$rounds" ]; do
            xb $net "$out/lx" --op $op --start-block-size 8 --max-block-size 8 \
                --num-iter 20000 --warmup-iter 1000
            base $net "$out/lb" -o $op -s 8 -n 20000 -w 1000
            v=$(field 8 "$out/lb" med_lat_us)
            bs="$bs ${v:-0}"
            if [ $baseline_only = 0 ]; then
                v=$(field 8 "$out/lx" med_xfer_us)
                xs="$xs ${v:-0}"
            fi
            r=$((r + 1))
        done
        # shellcheck disable=SC2086
        m=$(median $bs) x=-
        # shellcheck disable=SC2086
        [ -n "$xs" ] && x=$(median $xs)
        printf "%-4s %-6s %9s %9s %7s\n" $net $op "$m" "$x" "$(xratio "$x" "$m")"
        echo "   $net $op samples: ofi-rma$bs${xs:+ | xfer$xs}" >> "$out/samples"
    done
done
cat "$out/samples"

echo
echo "== 1024 x 4 KiB WRITE in one request: ns per descriptor of the post (medians of $rounds rounds)"
echo "   xfer: bench/post-overhead, xfer_req_post of a prepared request (its median);"
echo "   ofi-rma: posting alone, 1024 fi_writemsg (median; includes what the provider"
echo "   does inline, e.g. shm's copy of an inject-sized segment)"
printf "%-4s %9s %9s %9s %7s\n" prov ofi-rma xfer marginal ratio
: > "$out/samples"
for net in tcp shm; do
    eval "p=\$PROV_$net d=\$DOM_$net"
    bs='' xs='' gs=''
    r=0
    while [ $r -lt "$rounds" ]; do
        if [ $baseline_only = 0 ]; then
            # shellcheck disable=SC2154
            ./bench/post-overhead -n 200 -w 20 -d 1024 -s 4096 \
                -b "ofi:provider=$p${d:+,domain=$d}" > "$out/po" 2>&1 || cat "$out/po" >&2
            xs="$xs $(awk '/all descriptors/ { v = $(NF-2) } END { print v + 0 }' "$out/po")"
            gs="$gs $(awk '/marginal/ { v = $(NF-2) } END { print v + 0 }' "$out/po")"
        fi
        base $net "$out/pb" -o WRITE -s 4096 -b 1024 -n 200 -w 20
        v=$(field 4096 "$out/pb" post_ns_desc)
        bs="$bs ${v:-0}"
        r=$((r + 1))
    done
    # shellcheck disable=SC2086
    m=$(median $bs) x=- g=-
    # shellcheck disable=SC2086
    [ -n "$xs" ] && x=$(median $xs) && g=$(median $gs)
    printf "%-4s %9s %9s %9s %7s\n" $net "$m" "$x" "$g" "$(xratio "$x" "$m")"
    echo "   $net samples: ofi-rma$bs${xs:+ | xfer$xs | marginal$gs}" >> "$out/samples"
done
cat "$out/samples"
