# nats.sh - a test nats-server with JetStream on loopback for the shell
# tests, sourced: what tests/common/nats.c starts for the C tests.
#   xt_nats_need       SKIP (exit 77) without nats-server ($XT_NATS_SERVER)
#   xt_nats_start DIR  store and nats.log in DIR; sets $nats_url, or
#                      returns 1 with the log left in DIR/nats.log
#   xt_nats_stop       ends it (idempotent: call it from the EXIT trap)

xt_nats_bin=${XT_NATS_SERVER:-/usr/sbin/nats-server}
nats_pid= nats_url=

xt_nats_need() {
    if [ ! -x "$xt_nats_bin" ]; then
        echo "SKIP: no nats-server at $xt_nats_bin" \
            "(apt-get install nats-server, or set XT_NATS_SERVER)"
        exit 77
    fi
}

# Ports from this shell's pid, tried until one is free; up when the log
# says the server is ready (JetStream is on before it says so).
xt_nats_start() {
    for xt_try in 1 2 3 4 5; do
        xt_port=$((20000 + ($$ * 11 + xt_try * 137) % 20000))
        nats_url=nats://127.0.0.1:$xt_port
        : >"$1/nats.log"
        "$xt_nats_bin" -a 127.0.0.1 -p "$xt_port" -js -sd "$1/js$xt_try" \
            -l "$1/nats.log" 2>>"$1/nats.log" &
        nats_pid=$!
        for xt_i in $(seq 1 100); do
            grep -q 'Server is ready' "$1/nats.log" 2>/dev/null && return 0
            kill -0 "$nats_pid" 2>/dev/null || break
            sleep 0.1
        done
        xt_nats_stop
    done
    nats_url=
    return 1
}

# SIGTERM, then SIGKILL after 5 s, as the C fixture does.
xt_nats_stop() {
    if [ -n "$nats_pid" ]; then
        kill "$nats_pid" 2>/dev/null
        xt_i=0
        while kill -0 "$nats_pid" 2>/dev/null && [ $xt_i -lt 50 ]; do
            sleep 0.1
            xt_i=$((xt_i + 1))
        done
        kill -9 "$nats_pid" 2>/dev/null
        wait "$nats_pid" 2>/dev/null
    fi
    nats_pid=
}
