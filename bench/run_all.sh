#!/usr/bin/env bash
# Every benchmark in turn, one after the other (they would disturb each other's figures if run together).
# Arguments (e.g. --quick) are passed to each script. The virtualenv is $ARCHQ_VENV, as for .ci/test.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ARCHQ_VENV:-.venv}"
for script in submit dispatch routing heartbeats lists drain vm migration guest_boot console emulation; do
    "$VENV/bin/python" -m "bench.$script" "$@"
    echo
done
