#!/bin/sh
# Unpacks Debian's source package of cJSON (the version of the installed libcjson-dev, with
# Debian's patches applied) into DIR/src, for the static build of the image (make image):
# Debian 12 ships static archives of libuv, mbedTLS and c-ares but none of cJSON. Nothing is
# copied into the repository; apt fetches and verifies the source like any package, using a
# private sources list and state directory under DIR (the machine's apt setup is not changed).
# Usage: deps/cjson-source.sh DIR   (prints DIR/src, where cJSON.c is)
set -eu
dir=$(mkdir -p "$1" && cd "$1" && pwd)
if [ -f "$dir/src/cJSON.c" ]; then
    echo "$dir/src"
    exit 0
fi
version=$(dpkg-query -W -f='${Version}' libcjson-dev)
mkdir -p "$dir/apt/parts" "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/fetch"
cat >"$dir/apt/parts/debian-src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_private() {
    apt-get -qq -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$dir/apt/parts" \
        -o Dir::State::Lists="$dir/apt/lists" -o Dir::Cache="$dir/apt/cache" \
        -o APT::Sandbox::User=root "$@"
}
echo "fetching Debian's source of cjson $version" >&2
apt_private update
(cd "$dir/fetch" && apt_private source --download-only "cjson=$version" >&2)
rm -rf "$dir/src.tmp"
dpkg-source --no-check -x "$dir/fetch"/cjson_*.dsc "$dir/src.tmp" >&2
mv "$dir/src.tmp" "$dir/src"
rm -rf "$dir/apt/lists"
echo "$dir/src"
