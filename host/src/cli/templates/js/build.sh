#!/usr/bin/env bash
# Builds {{crate_name}}.wasm, a WebAssembly component, from app.js with ComponentizeJS against
# wit/plugin.wit. The toolchain (pinned in package.json) is installed from npm into
# node_modules/ on first use (needs node >= 20 and npm); COMPONENTIZE_JS names another
# componentize-js executable to use.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
bin="${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}"
if [[ ! -x "$bin" ]]; then
    npm install --no-audit --no-fund --no-package-lock
fi
"$bin" app.js --wit wit --world-name plugin -o {{crate_name}}.wasm
echo "built $here/{{crate_name}}.wasm"
