#!/usr/bin/env bash
# Installs the OpenAPI conformance tools, pinned, from PyPI into a virtualenv under DIR:
# schemathesis (drives the live server from /openapi.json) and openapi-python-client (generates
# a client from it). tests/tests/e2e/openapi_conformance.rs runs them when
# WASMHOOK_OPENAPI_TOOLS_DIR points at DIR.
#
# Usage: tests/openapi/install-tools.sh [DIR]   (DIR defaults to <repo>/target/openapi-tools)
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${1:-$repo/target/openapi-tools}"
venv="$dir/venv"

installed() {
    "$venv/bin/python" -m pip show "$1" 2>/dev/null | grep -qx "Version: $2"
}
if ! installed schemathesis "$SCHEMATHESIS_VERSION" ||
    ! installed openapi-python-client "$OPENAPI_PYTHON_CLIENT_VERSION"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" \
        "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION"
fi
echo "OpenAPI tools ready in $venv"
