# etcd.sh - a test etcd on loopback for the shell tests, sourced: the same
# member tests/common/etcd.c starts for the C tests, health seen through curl.
#   xt_etcd_need       SKIP (exit 77) without etcd ($XT_ETCD) or curl
#   xt_etcd_start DIR  data dirs and etcd.log in DIR; sets $etcd_url, or
#                      returns 1 with the log left in DIR/etcd.log
#   xt_etcd_stop       ends it (idempotent: call it from the EXIT trap)

xt_etcd_bin=${XT_ETCD:-/usr/bin/etcd}
etcd_pid= etcd_url=

xt_etcd_need() {
    if [ ! -x "$xt_etcd_bin" ]; then
        echo "SKIP: no etcd at $xt_etcd_bin" \
            "(apt-get install etcd-server, or set XT_ETCD)"
        exit 77
    fi
    if ! command -v curl >/dev/null 2>&1; then
        echo "SKIP: curl is needed to see etcd become healthy"; exit 77
    fi
}

xt_etcd_healthy() {
    curl -s --noproxy '*' -m 1 "$etcd_url/health" | grep -q '"health":"true"'
}

# Ports from this shell's pid, tried until etcd comes up on a free pair.
xt_etcd_start() {
    for xt_try in 1 2 3 4 5; do
        xt_cport=$((20000 + ($$ * 7 + xt_try * 131) % 20000))
        xt_purl=http://127.0.0.1:$((xt_cport + 1))
        etcd_url=http://127.0.0.1:$xt_cport
        "$xt_etcd_bin" --name xt --data-dir "$1/data$xt_try" \
            --listen-client-urls "$etcd_url" \
            --advertise-client-urls "$etcd_url" \
            --listen-peer-urls "$xt_purl" \
            --initial-advertise-peer-urls "$xt_purl" \
            --initial-cluster "xt=$xt_purl" >"$1/etcd.log" 2>&1 &
        etcd_pid=$!
        for xt_i in $(seq 1 100); do
            xt_etcd_healthy && return 0
            kill -0 "$etcd_pid" 2>/dev/null || break
            sleep 0.1
        done
        xt_etcd_stop
    done
    etcd_url=
    return 1
}

# SIGTERM, then SIGKILL after 5 s, as the C fixture does.
xt_etcd_stop() {
    if [ -n "$etcd_pid" ]; then
        kill "$etcd_pid" 2>/dev/null
        i=0
        while kill -0 "$etcd_pid" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -9 "$etcd_pid" 2>/dev/null
        wait "$etcd_pid" 2>/dev/null
    fi
    etcd_pid=
}
