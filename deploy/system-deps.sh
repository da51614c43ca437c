#!/bin/sh
# Install the system programs the tests drive, only when one is missing.
#
# sox and espeak-ng make and measure test audio; chromium is the browser
# caller. Debian/Ubuntu only (apt-get); elsewhere it says what to install.
set -eu

# binary:package pairs
wanted="sox:sox espeak-ng:espeak-ng chromium:chromium"

missing=""
for pair in $wanted; do
    bin=${pair%%:*}
    pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || missing="$missing $pkg"
done

if [ -z "$missing" ]; then
    echo "test: system packages present (sox, espeak-ng, chromium)"
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
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing
