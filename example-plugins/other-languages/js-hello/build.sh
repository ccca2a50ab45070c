#!/usr/bin/env bash
# Builds js_hello.wasm, a WebAssembly component, from app.js with ComponentizeJS (default options).
#
# Usage: example-plugins/other-languages/js-hello/build.sh [OUT_DIR]
#   OUT_DIR defaults to <repo>/target/other-languages.
#
# The toolchain (pinned in package.json) is installed from npm into
# node_modules/ beside this script on first use; it needs node (>= 20) and npm.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out_dir="${1:-$repo/target/other-languages}"

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

cd "$here"
if [[ ! -x node_modules/.bin/componentize-js ]]; then
    # No lockfile: npm 11 writes one for this package tree that `npm ci` rejects and from which
    # `npm install` leaves out @bytecodealliance/preview2-shim. package.json pins the version.
    npm install --no-audit --no-fund --no-package-lock
fi
node_modules/.bin/componentize-js app.js --wit "$repo/wit" --world-name plugin -o "$out_dir/js_hello.wasm"
echo "built $out_dir/js_hello.wasm"
