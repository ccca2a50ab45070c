#!/usr/bin/env bash
# Builds python_hello.wasm, a WebAssembly component, from app.py with componentize-py.
#
# Usage: example-plugins/other-languages/python-hello/build.sh [OUT_DIR [WIT_DIR]]
#   OUT_DIR defaults to <repo>/target/other-languages; WIT_DIR to <repo>/wit (another build's
#   WIT, e.g. `git archive <commit> wit | tar -x -C /tmp/old`, builds the example for that build).
#
# componentize-py (pinned below) is installed from PyPI into a virtualenv under
# <repo>/target/other-languages/python-venv on first use; it needs python3 (>= 3.10) with venv.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out_dir="${1:-$repo/target/other-languages}"
wit_dir="$(cd "${2:-$repo/wit}" && pwd)"
venv="$repo/target/other-languages/python-venv"

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

if [[ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# Run from the plugin directory so that `app` resolves to app.py. VIRTUAL_ENV points at the
# toolchain's venv so that only it (never whatever the system python has installed) is searched
# for imports; componentize-py bundles just the modules the app imports.
cd "$here"
PYTHONDONTWRITEBYTECODE=1 VIRTUAL_ENV="$venv" "$venv/bin/componentize-py" -d "$wit_dir" -w plugin \
    componentize app -p "$here" -o "$out_dir/python_hello.wasm"
rm -rf "$here/__pycache__"
echo "built $out_dir/python_hello.wasm"
