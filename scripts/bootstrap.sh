# Sourced by scripts/run-demo and scripts/run-tests: makes a fresh Debian machine
# with Python 3.11 ready (Debian packages, .venv from requirements.lock).
# Idempotent and quick when nothing changed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

apt_install() {
    # Installs the named Debian packages that are not there yet.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
    echo "bootstrap: Python 3.11 is required (found $("$PY" --version 2>&1))" >&2; exit 2; }

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; "$PY" -m venv "$VENV"; }
fi

pip_quiet() {
    # pip, minus the per-package notes some mirrors' configs print.
    "$VENV/bin/python" -m pip -q --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2) >&2
}

stamp="$VENV/.bbbfleet-lock"
want=$( (cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml"; echo editable_mode=compat) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: installing the locked Python set into .venv" >&2
    pip_quiet install -r "$ROOT/requirements.lock"
    # compat: ROOT itself on sys.path, where the compiled modules' shared library sits
    # (bbbcore/native.py).
    pip_quiet install --no-deps -e "$ROOT" --config-settings editable_mode=compat
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"

# mypyc compiles the backtest's hot path in place (bbbcore/native.py), for its speed:
# a minute, and only when those sources changed. BBBFLEET_COMPILE=0 skips it and removes
# an earlier build, so that everything runs interpreted (a stale one would be refused).
native_state=$(python -c 'from bbbcore import native; print(native.state().state)')
if [ "${BBBFLEET_COMPILE:-1}" = 0 ]; then
    [ "$native_state" = interpreted ] || python "$ROOT/scripts/compile.py" --clean
elif [ "$native_state" != compiled ]; then
    command -v gcc >/dev/null 2>&1 || apt_install gcc libc6-dev
    python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
        || apt_install python3.11-dev
    echo "bootstrap: compiling the backtest's hot path with mypyc (about a minute)" >&2
    python "$ROOT/scripts/compile.py" >"$VENV/compile.log" 2>&1 || {
        tail -n 40 "$VENV/compile.log" >&2
        echo "bootstrap: compiling failed (log: $VENV/compile.log; BBBFLEET_COMPILE=0 skips it)" >&2
        exit 1
    }
fi

checkov_venv() {
    # checkov in a venv of its own (.venv-checkov) from checkov/requirements.txt: it pins
    # a boto3 older than the botocore 1.40 line aioboto3 needs, so it cannot share .venv.
    # Prints the path of the checkov program.
    local venv="$ROOT/.venv-checkov" lock="$ROOT/checkov/requirements.txt"
    local want have
    want=$(sha256sum "$lock" | cut -d' ' -f1)
    have=$(cat "$venv/.bbbfleet-lock" 2>/dev/null || true)
    if [ "$have" != "$want" ]; then
        echo "bootstrap: installing checkov into .venv-checkov" >&2
        rm -rf "$venv"
        "$PY" -m venv "$venv"
        "$venv/bin/python" -m pip -q --disable-pip-version-check install -r "$lock" \
            2> >(grep -v '^WARNING: Location' >&2) >&2
        echo "$want" > "$venv/.bbbfleet-lock"
    fi
    echo "$venv/bin/checkov"
}
