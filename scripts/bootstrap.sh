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
want=$(cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: installing the locked Python set into .venv" >&2
    pip_quiet install -r "$ROOT/requirements.lock"
    pip_quiet install --no-deps -e "$ROOT"
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"

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
