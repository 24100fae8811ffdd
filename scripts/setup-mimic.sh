#!/usr/bin/env bash
# mimic (the OpenStack Keystone v2 + Nova server the live cloud tests run) pins old dependencies, so it
# lives in a virtual environment of its own, .mimic-venv, beside the project's .venv. Idempotent: when
# mimic is already there this only checks that it imports (well under a second).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.mimic-venv
version=2.2.0
stamp="$venv/.daaas-mimic-$version"
if [ -f "$stamp" ] && [ -x "$venv/bin/twistd" ]; then
    exit 0
fi
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup-mimic: creating $venv"
    "$py" -m venv "$venv"
fi
echo "setup-mimic: installing mimic $version into $venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "mimic==$version"
# Fail here, loudly, rather than in the tests: mimic's plugins must load with this Twisted.
"$venv/bin/python" -c "import mimic, twisted.plugins.mimic"
touch "$stamp"
