#!/bin/sh
# setup.sh - one command from a fresh Debian 12 machine to a working xfer:
# installs what is missing, builds in ./build, then benchmarks or tests.
#
#   ./setup.sh          install, build, run xfer-bench on the default backend
#   ./setup.sh check    install, build, run the whole test suite (make check)
#
# CONFIGURE_FLAGS is passed to configure (CI sets --enable-werror).
set -eu

mode=${1:-bench}
case $mode in
bench | check) ;;
*)
    echo "usage: $0 [bench|check]" >&2
    exit 2
    ;;
esac

top=$(cd "$(dirname "$0")" && pwd)
cd "$top"

packages="build-essential autoconf automake libtool libltdl-dev pkg-config
libjansson-dev libcunit1-dev libssl-dev iperf3 procps
libcurl4-openssl-dev etcd-server curl openssl
libucx-dev ucx-utils libfabric-dev libfabric-bin libibverbs-dev ibverbs-utils
perftest gnuplot-nox clang libclang-rt-14-dev libnats-dev nats-server
python3 python3-dev python3-cffi python3-numpy python3-pytest
python3-setuptools python3-wheel python3-venv"
# openssl: the command that makes the throwaway CA of the etcd TLS tests.
# libucx-dev: the ucx plugin (UCP).
# libfabric-dev: the ofi plugin; libfabric-bin: fi_info, to see providers.
# libibverbs-dev: the verbs plugin (built and tested over an emulated
# device where there is no RDMA NIC); ibverbs-utils: ibv_devices;
# perftest: ib_write_bw, its baseline on real hardware (not make check).
# ucx-utils: ucx_perftest, the baseline of bench/compare-uds.sh and
# bench/compare-ucx.sh (not make check).
# libnats-dev: the event plane (docs/events.md); nats-server (with
# JetStream) is started by its tests on a free loopback port.
# python3-*: the Python package (python/, docs/python.md), built by pip
# without a package index in a venv that sees these, and its pytest suite;
# configure picks Debian's /usr/bin/python3 for them.
# clang, libclang-rt-14-dev: libFuzzer for make fuzz-smoke (.ci/run), not make check.
missing=
for p in $packages; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "setup: installing$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
    ./autogen.sh
fi
mkdir -p build
cd build
if [ ! -f Makefile ] || [ ../configure -nt Makefile ]; then
    # shellcheck disable=SC2086
    ../configure ${CONFIGURE_FLAGS:-}
fi
make -j"$jobs"

case $mode in
bench)
    # The main job: a WRITE sweep over tcp between a forked target and
    # initiator, every byte checked.
    XFER_PLUGIN_PATH="$PWD/plugins/tcp" ./tools/xfer-bench --backend tcp \
        --op WRITE --start-block-size 4K --max-block-size 64M \
        --check-consistency
    ;;
check)
    make -j"$jobs" check
    ;;
esac
