# compare-lib.sh - what the bench/compare-*.sh scripts share: reading
# xfer-bench's and ucx_perftest's output, medians and ratios.  Sourced.

# The column named $3 of xfer-bench's row for block size $1 (bytes) in
# file $2.
field() {
    awk -v b="$1" -v n="$3" '$1 == "block_size" { for (i = 1; i <= NF; i++) if ($i == n) c = i; next }
        c && $1 == b { print $c; exit }' "$2"
}

# A byte count as 64K, 1M, ...
human() {
    awk -v s="$1" 'BEGIN { u = "BKMGT"; i = 1; while (s >= 1024 && s % 1024 == 0) { s /= 1024; i++ } printf "%d%s", s, (i > 1 ? substr(u, i, 1) : "") }'
}

# The median of the numbers given.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# $1 / $2 with two decimals (0 when $2 is 0).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'
}

# ucx_perftest's output in file $1: the last row's overall bandwidth in
# GB/s (its MB/s is 2^20 B/s), and its median latency in us.
ucx_gbps() {
    awk '$1 ~ /^[0-9]+$/ && NF >= 8 { v = $6 } END { printf "%.3f", v * 1048576 / 1e9 }' "$1"
}
ucx_lat() {
    awk '$1 ~ /^[0-9]+$/ && NF >= 8 { v = $2 } END { printf "%.3f", v }' "$1"
}
