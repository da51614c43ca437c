#!/bin/sh
# Install the system programs the tests drive, only when one is missing.
#
# sox and espeak-ng make and measure test audio; chromium is the browser
# caller; docker-compose (Debian's 1.29, without the Docker engine it
# recommends: 16 small Python packages) validates docker-compose.yml offline.
# Debian/Ubuntu only (apt-get); elsewhere it says what to install.
set -eu

# binary:package pairs
wanted="sox:sox espeak-ng:espeak-ng chromium:chromium docker-compose:docker-compose"

missing=""
for pair in $wanted; do
    bin=${pair%%:*}
    pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || missing="$missing $pkg"
done

if [ -z "$missing" ]; then
    echo "test: system packages present (sox, espeak-ng, chromium, docker-compose)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "test: missing system packages:$missing (no apt-get here: install them yourself)" >&2
    exit 1
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "test: missing system packages:$missing (not root and no sudo: install them yourself)" >&2
        exit 1
    fi
fi

echo "test: installing system packages:$missing"
$sudo apt-get update -q
plain=""
for pkg in $missing; do
    [ "$pkg" = docker-compose ] || plain="$plain $pkg"
done
[ -z "$plain" ] || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $plain
case "$missing" in
    # Without recommends: docker-compose's would pull in the Docker engine.
    *docker-compose*) DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends docker-compose ;;
esac
