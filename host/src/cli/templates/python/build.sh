#!/usr/bin/env bash
# Builds {{crate_name}}.wasm, a WebAssembly component, from app.py with componentize-py against
# wit/plugin.wit. componentize-py (pinned below) is installed from PyPI into .venv on first use
# (needs python3 >= 3.10 with venv); COMPONENTIZE_PY_VENV names another virtualenv to use.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${COMPONENTIZE_PY_VENV:-$here/.venv}"

if [[ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

cd "$here"
PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV="$venv" "$venv/bin/componentize-py" -d wit -w plugin \
    componentize app -p . -o {{crate_name}}.wasm
rm -rf __pycache__
echo "built $here/{{crate_name}}.wasm"
