#!/bin/sh
# compare-ucx.sh - the ucx figures of docs/performance.md (issue 11) in one run:
# xfer-bench --backend ucx against ucx_perftest, same UCX_TLS, taking turns.
#
# usage: bench/compare-ucx.sh [BUILD_DIR] [ROUNDS]   (default: ./build, 3)
# Needs ucx_perftest (Debian/Ubuntu: ucx-utils).  For each point the tools
# take turns for ROUNDS rounds and each tool's median is compared (a burst
# of noise on a shared machine then hits one sample of every tool alike):
#   1. WRITE vs ucp_put_bw, READ vs ucp_get: 1 MiB to 64 MiB batch 1, and
#      64 KiB x 16 with --pipeline-depth 16 (16 requests in flight) against
#      ucx_perftest -O 16; on tcp (tls=tcp) and shared memory
#      (tls=posix,cma,self error_mode=none; xfer with --alloc malloc and
#      --alloc xfer).
#   2. 4 KiB x 1024 in one request against 1 MiB x 1, shared memory.
#   3. 8 B WRITE to completion (median) against 2x ucp_put_lat's one-way
#      median, polling and with --progress-thread.
#   4. bench/post-overhead: prepared post of 1024 descriptors, ucx and tcp.
#   5. Which UCX transport moved the bytes: one run of each tool with
#      UCX_LOG_LEVEL=info (the ep_cfg lanes of UCX 1.13's default
#      protocols) and one with UCX_PROTO_ENABLE=y UCX_PROTO_INFO=y (1.13
#      prints protocol tables only for its optional new protocol layer).
# GB/s are 10^9 B/s (ucx_perftest's MB/s, 2^20 B/s, converted).  Every
# sample is printed after each table.
set -eu

. "$(cd "$(dirname "$0")" && pwd)/compare-lib.sh"
build=${1:-build}
rounds=${2:-3}
cd "$build"
export XFER_PLUGIN_PATH="$PWD/plugins/ucx:$PWD/plugins/tcp"
command -v ucx_perftest >/dev/null || { echo "ucx_perftest not found (install ucx-utils)" >&2; exit 1; }
port=$((20000 + $$ % 20000))
out=$(mktemp -d)
srv=
trap 'rm -rf "$out"; [ -n "$srv" ] && kill $srv 2>/dev/null || true' EXIT

# Read through eval below.
# shellcheck disable=SC2034
{
    TLS_tcp=tcp
    TLS_shm=posix,cma,self
    SPEC_tcp='ucx:tls=tcp'
    SPEC_shm='ucx:tls=posix\,cma\,self,error_mode=none'
}

# Iterations for SIZE bytes per post over NET: about 256 MiB a sample on
# tcp (0.2 to 3 GB/s here), 1 GiB on shared memory, at least 16; the same
# for both tools.
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

# UCX's default order of allocators, and one that gives ucx_perftest plain
# heap memory: then its posix transport cannot map the buffers and UCP
# moves them as xfer's user memory moves (see docs/performance.md).
PRIO_ucx='md:sysv,md:posix,huge,thp,md:*,mmap,heap'
PRIO_heap=heap

# perf TLS PRIO TEST SIZE ITERS WARMUP [EXTRA...]: run ucx_perftest, output
# in $out/ucx.
perf() {
    tls=$1 prio=$2 t=$3 s=$4 n=$5 w=$6
    shift 6
    UCX_ALLOC_PRIO=$prio UCX_TLS=$tls ucx_perftest -p "$port" >/dev/null 2>&1 &
    srv=$!
    sleep 0.5
    UCX_ALLOC_PRIO=$prio UCX_TLS=$tls ucx_perftest 127.0.0.1 -p "$port" -t "$t" -s "$s" \
        -n "$n" -w "$w" -f "$@" > "$out/ucx" 2>&1 || true
    kill $srv 2>/dev/null || true
    wait $srv 2>/dev/null || true
    srv=
}
perf_gbps() { ucx_gbps "$out/ucx"; }
perf_lat() { ucx_lat "$out/ucx"; }

# xb SPEC OUTFILE ARGS...: one xfer-bench run.
xb() {
    spec=$1 f=$2
    shift 2
    ./tools/xfer-bench --backend "$spec" --no-progress --large-block-iter-factor 1 "$@" > "$f" 2>&1 || {
        echo "xfer-bench failed:" >&2
        cat "$f" >&2
    }
}

echo "# compare-ucx.sh $(date -u '+%Y-%m-%d %H:%M UTC'), $(ucx_info -v | head -1 | sed 's/# //'), rounds $rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== bandwidth (medians of $rounds rounds, GB/s; ratio = xfer / ucx_perftest)"
echo "   ucx: ucx_perftest's own buffers (posix-mapped on shm); ucx_heap: UCX_ALLOC_PRIO=heap"
echo "   (user memory, as xfer's); xfer_mal/xfer_xal: xfer-bench --alloc malloc / xfer"
printf "%-4s %-6s %-7s %8s %8s %8s %8s %7s %7s %7s\n" tls op point ucx ucx_heap xfer_mal xfer_xal mal/ucx xal/ucx mal/heap
: > "$out/samples"
for net in tcp shm; do
    eval tls=\$TLS_$net spec=\$SPEC_$net
    allocs=malloc
    [ $net = shm ] && allocs="malloc xfer"
    for op in WRITE READ; do
        t=ucp_put_bw
        [ $op = READ ] && t=ucp_get
        for point in 64Kx16 1M 4M 16M 64M; do
            case $point in
            64Kx16) s=65536 b=16 ;;
            1M) s=1048576 b=1 ;;
            4M) s=4194304 b=1 ;;
            16M) s=16777216 b=1 ;;
            64M) s=67108864 b=1 ;;
            esac
            # 64Kx16: --num-iter counts requests of one 64 KiB block, as
            # ucx_perftest -n counts puts.
            n=$(iters $s $net) w=$(warm "$(iters $s $net)")
            us='' hs='' ms='' xs=''
            r=0
            while [ $r -lt "$rounds" ]; do
                for a in $allocs; do
                    f="$out/$net-$op-$point-$a-$r"
                    if [ $b = 16 ]; then
                        # 16 requests of one 64 KiB block each in flight;
                        # --num-iter counts requests.
                        xb "$spec" "$f" --op $op --start-block-size $s --max-block-size $s \
                            --start-batch-size 16 --max-batch-size 16 --pipeline-depth 16 \
                            --num-iter "$n" --warmup-iter "$w" --alloc $a
                    else
                        xb "$spec" "$f" --op $op --start-block-size $s --max-block-size $s \
                            --num-iter "$n" --warmup-iter "$w" --alloc $a
                    fi
                    v=$(field $s "$f" gbps)
                    if [ $a = malloc ]; then ms="$ms ${v:-0}"; else xs="$xs ${v:-0}"; fi
                done
                o=
                [ $b = 16 ] && o="-O 16"
                # shellcheck disable=SC2086
                perf $tls "$PRIO_ucx" $t $s "$n" "$w" $o
                us="$us $(perf_gbps)"
                if [ $net = shm ]; then
                    # A quarter of the iterations: this path runs at
                    # 0.1 to 0.6 GB/s.
                    hn=$((n / 4))
                    [ $hn -lt 16 ] && hn=16
                    # shellcheck disable=SC2086
                    perf $tls "$PRIO_heap" $t $s "$hn" "$w" $o
                    hs="$hs $(perf_gbps)"
                fi
                r=$((r + 1))
            done
            # shellcheck disable=SC2086
            u=$(median $us) m=$(median $ms) x=- xr=- h=- hr=-
            # shellcheck disable=SC2086
            [ -n "$xs" ] && x=$(median $xs) && xr=$(ratio "$x" "$u")
            # shellcheck disable=SC2086
            [ -n "$hs" ] && h=$(median $hs) && hr=$(ratio "$m" "$h")
            printf "%-4s %-6s %-7s %8s %8s %8s %8s %7s %7s %7s\n" $net $op $point "$u" "$h" "$m" "$x" \
                "$(ratio "$m" "$u")" "$xr" "$hr"
            echo "   $net $op $point samples: ucx$us${hs:+ | ucx_heap$hs} | malloc$ms${xs:+ | xfer$xs}" >> "$out/samples"
        done
    done
done
echo
echo "== every sample (GB/s), in the order of the table"
cat "$out/samples"

echo
echo "== 4 KiB x 1024 in one request against 1 MiB x 1, shared memory (medians of $rounds rounds, GB/s)"
: > "$out/samples"
for a in malloc xfer; do
    bs='' ms=''
    r=0
    while [ $r -lt "$rounds" ]; do
        xb "$SPEC_shm" "$out/b" --op WRITE --start-block-size 4K --max-block-size 4K \
            --start-batch-size 1024 --max-batch-size 1024 --num-iter 256 --warmup-iter 25 --alloc $a
        xb "$SPEC_shm" "$out/m" --op WRITE --start-block-size 1M --max-block-size 1M \
            --num-iter 256 --warmup-iter 25 --alloc $a
        bs="$bs $(field 4096 "$out/b" gbps)" ms="$ms $(field 1048576 "$out/m" gbps)"
        r=$((r + 1))
    done
    # shellcheck disable=SC2086
    b=$(median $bs) m=$(median $ms)
    printf "%-6s 4Kx1024 %s GB/s, 1M %s GB/s, ratio %s\n" $a "$b" "$m" "$(ratio "$b" "$m")"
    echo "   $a samples: 4Kx1024$bs | 1M$ms" >> "$out/samples"
done
cat "$out/samples"

echo
echo "== 8 B WRITE to completion, median us (medians of $rounds rounds) against ucp_put_lat (2 x one-way median)"
echo "   (put_lat_heap: ucx_perftest with UCX_ALLOC_PRIO=heap, user memory as xfer's; shm only)"
printf "%-4s %10s %12s %10s %10s %8s %8s\n" tls put_lat_rt put_lat_heap poll thread poll/rt thr/poll
: > "$out/samples"
for net in tcp shm; do
    eval tls=\$TLS_$net spec=\$SPEC_$net
    ls='' hs='' ps='' ts=''
    r=0
    while [ $r -lt "$rounds" ]; do
        xb "$spec" "$out/lp" --op WRITE --start-block-size 8 --max-block-size 8 \
            --num-iter 20000 --warmup-iter 1000
        xb "$spec" "$out/lt" --op WRITE --start-block-size 8 --max-block-size 8 \
            --num-iter 20000 --warmup-iter 1000 --progress-thread
        perf $tls "$PRIO_ucx" ucp_put_lat 8 20000 1000
        ps="$ps $(field 8 "$out/lp" med_xfer_us)" ts="$ts $(field 8 "$out/lt" med_xfer_us)"
        ls="$ls $(awk -v v="$(perf_lat)" 'BEGIN { printf "%.3f", 2 * v }')"
        if [ $net = shm ]; then
            perf $tls "$PRIO_heap" ucp_put_lat 8 20000 1000
            hs="$hs $(awk -v v="$(perf_lat)" 'BEGIN { printf "%.3f", 2 * v }')"
        fi
        r=$((r + 1))
    done
    # shellcheck disable=SC2086
    l=$(median $ls) p=$(median $ps) t=$(median $ts) h=-
    # shellcheck disable=SC2086
    [ -n "$hs" ] && h=$(median $hs)
    printf "%-4s %10s %12s %10s %10s %8s %8s\n" $net "$l" "$h" "$p" "$t" "$(ratio "$p" "$l")" "$(ratio "$t" "$p")"
    echo "   $net samples: put_lat_rt$ls${hs:+ | put_lat_heap$hs} | poll$ps | thread$ts" >> "$out/samples"
done
cat "$out/samples"

echo
echo "== prepared post of 1024 x 8 B descriptors (bench/post-overhead, 2000 posts), ns per descriptor"
for spec in tcp ucx:tls=tcp "$SPEC_shm"; do
    ./bench/post-overhead -n 2000 -b "$spec" > "$out/po" 2>&1 || cat "$out/po" >&2
    awk -v s="$spec" '/all descriptors/ { m = $(NF-2); p = $(NF-1) }
        /marginal/ { g = $(NF-2) }
        END { printf "%-42s median %6s p99 %6s marginal %6s\n", s, m, p, g }' "$out/po"
done
echo "-- the floor under it: ucx_perftest ucp_put_bw of 8 B, 100000 puts, ns per put (1e9 / overall msg/s)"
for x in tcp:ucx shm:ucx shm:heap; do
    net=${x%:*} prio=${x#*:}
    eval tls=\$TLS_$net p=\$PRIO_$prio
    perf $tls "$p" ucp_put_bw 8 100000 1000
    awk -v x="UCX_TLS=$tls UCX_ALLOC_PRIO=$prio" '$1 ~ /^[0-9]+$/ && NF >= 8 { v = $8 }
        END { printf "%-42s %8.1f ns per put\n", x, (v > 0 ? 1e9 / v : 0) }' "$out/ucx"
done

echo
echo "== which transport moved the bytes (1 MiB WRITE/put, one run each)"
# xfer_info SPEC ALLOC and perf_info TLS: run once with the variables
# given in $info exported; print the lines that name the lanes.
info_lines() {
    grep -o 'ep_cfg\[[0-9]*\]:.*' "$1" | sort | uniq -c || true
    grep -A4 'ucp_put' "$1" | sed 's/^\[[^]]*\] \[[^]]*\] *//' | sort -u |
        grep -e '\.\.' -e 'put' || true
}
# Run the rest of the line with the variables of $info exported.
with_info() {
    # shellcheck disable=SC2086,SC2163
    export $info
    "$@"
    unset UCX_LOG_LEVEL UCX_PROTO_ENABLE UCX_PROTO_INFO
}
for net in tcp shm; do
    eval tls=\$TLS_$net spec=\$SPEC_$net
    for info in UCX_LOG_LEVEL=info "UCX_PROTO_ENABLE=y UCX_PROTO_INFO=y"; do
        for a in malloc xfer; do
            [ $net = tcp ] && [ $a = xfer ] && continue
            with_info xb "$spec" "$out/i" --op WRITE \
                --start-block-size 1M --max-block-size 1M --num-iter 16 \
                --warmup-iter 2 --alloc $a
            echo "-- xfer-bench --backend $spec --alloc $a, $info:"
            info_lines "$out/i"
        done
        for prio in ucx heap; do
            [ $net = tcp ] && [ $prio = heap ] && continue
            eval p=\$PRIO_$prio
            with_info perf $tls "$p" ucp_put_bw 1048576 16 2
            echo "-- UCX_TLS=$tls UCX_ALLOC_PRIO=$p ucx_perftest -t ucp_put_bw, $info:"
            info_lines "$out/ucx"
        done
    done
done
