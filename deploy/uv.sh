#!/bin/sh
# Run uv, installing it first if this machine has none.
#
# The Makefile calls every uv command through this script, so a fresh machine
# with only Python 3.11+ and pip can `make run` / `make test`. uv comes from
# PyPI into a bootstrap venv under .venv-tools/ (never the system Python,
# which Debian marks externally managed); `pip install --user` is the fallback
# when the venv module is missing.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.venv-tools"

# Never let uv fetch a Python build: only package registries are reachable.
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
# Trust the platform's certificate store (as pip does), e.g. behind a TLS-inspecting proxy.
export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-true}"

find_uv() {
    if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
    for candidate in "$tools/bin/uv" "$HOME/.local/bin/uv"; do
        if [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
    done
    return 1
}

find_python() {
    for py in python3 python3.13 python3.12 python3.11 python; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$py"; return 0
        fi
    done
    return 1
}

if ! uv=$(find_uv); then
    py=$(find_python) || { echo "setup: Python 3.11 or newer is required (none found on PATH)" >&2; exit 1; }
    echo "setup: uv not found; installing it from PyPI into .venv-tools/ (with $py)" >&2
    if "$py" -m venv "$tools" >/dev/null 2>&1 && "$tools/bin/python" -m pip --version >/dev/null 2>&1; then
        # Keep the bootstrap venv out of git without touching the root .gitignore.
        echo '*' > "$tools/.gitignore"
        "$tools/bin/python" -m pip install --disable-pip-version-check --progress-bar off "uv>=0.5" >&2
    else
        rm -rf "$tools"
        echo "setup: python venv unavailable; falling back to pip install --user uv" >&2
        "$py" -m pip install --user --disable-pip-version-check "uv>=0.5" >&2 ||
            "$py" -m pip install --user --break-system-packages --disable-pip-version-check "uv>=0.5" >&2
    fi
    user_bin="$("$py" -m site --user-base)/bin"
    uv=$(find_uv || { [ -x "$user_bin/uv" ] && echo "$user_bin/uv"; }) ||
        { echo "setup: installed uv but cannot find its binary" >&2; exit 1; }
    echo "setup: using $("$uv" --version) at $uv" >&2
fi

exec "$uv" "$@"
