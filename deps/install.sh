#!/bin/sh
# Installs the Debian 12 packages llmux needs that are missing. Usage:
#   deps/install.sh build   - compiler, cmake, pkg-config and the libraries (the five, hiredis)
#   deps/install.sh test    - the above plus openssl (test PKI), node/npm (integration tests),
#                             clang with its runtimes (libFuzzer, ASan: the fuzz targets) and
#                             the image set (the container tests), prometheus (promtool
#                             checks /metrics), chromium (the dashboard, headless) and
#                             redis-server (shared limits and cache across instances)
#   deps/install.sh image   - the build set plus dpkg-dev (cJSON's source package) and podman
#                             with podman-compose, runc, netavark and aardvark-dns (make image;
#                             not podman when it is absent and a docker daemon answers)
#   deps/install.sh bench   - the build set plus nginx, redis-server, gnuplot, taskset/chrt/prlimit (util-linux),
#                             openssl, curl, strace (system calls per request) and node/npm
#                             (make bench)
# Runs apt-get through sudo when not root. Does nothing when everything is present.
set -eu
want="gcc make cmake pkg-config libuv1-dev libmbedtls-dev libcjson-dev libc-ares-dev libhiredis-dev node-llhttp ca-certificates"
podman_set="podman podman-compose runc netavark aardvark-dns"
if [ "${1:-build}" = image ]; then
    want="$want dpkg-dev"
    command -v podman >/dev/null 2>&1 || ! docker info >/dev/null 2>&1 || podman_set=""
    want="$want $podman_set"
fi
if [ "${1:-build}" = test ]; then
    want="$want openssl curl clang libclang-rt-dev dpkg-dev prometheus chromium redis-server $podman_set"
    command -v node >/dev/null 2>&1 || want="$want nodejs"
    command -v npm >/dev/null 2>&1 || want="$want npm"
fi
if [ "${1:-build}" = bench ]; then
    want="$want util-linux openssl curl strace redis-server"
    command -v nginx >/dev/null 2>&1 || want="$want nginx-light"
    command -v gnuplot >/dev/null 2>&1 || want="$want gnuplot-nox"
    command -v node >/dev/null 2>&1 || want="$want nodejs"
    command -v npm >/dev/null 2>&1 || want="$want npm"
fi
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
