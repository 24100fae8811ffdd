#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for daaas: Debian packages only when missing,
# a .venv, and the project installed in it. Safe to run again: it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"

missing=()
while read -r pkg; do
    pkg="${pkg%%#*}"; pkg="$(echo "$pkg" | xargs)"
    [ -n "$pkg" ] || continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < .ci/apt-packages.txt
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$py" -m venv .venv
fi
stamp=".venv/.daaas-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing daaas[$extras] into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[$extras]"
    touch "$stamp"
fi
# The policy core compiled with mypyc (~15 s the first time, instant when no source changed).
# Never fails: without a compiler or headers it says so in one line and core runs interpreted.
.venv/bin/python scripts/build_compiled.py || echo "setup: compiled core NOT built (scripts/build_compiled.py failed); core runs interpreted"
