#!/usr/bin/env bash
# Runs the WebSocket test suite of the FastAPI progress server Herald replaces
# (test_seed000.py) end to end against a freshly built Herald (tests/herald-up.sh:
# venv, build, a fresh server on a free port), with a token minted for it.
# Exits with pytest's status.
#
#   tests/seed000/run.sh [extra pytest args...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../herald-up.sh"
herald_venv seed000 "$HERE/requirements.txt"
herald_build
herald_start seed000

export HERALD_HTTP_URL="$HTTP_URL"
export HERALD_WS_URL="ws://$HERALD_ADDR"
HERALD_TOKEN="$("$HERALD" token --sub seed-user --role admin)"
export HERALD_TOKEN
echo "==> pytest -q tests/seed000"
set +e
(cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider "$HERE" "$@")
status=$?
set -e
exit "$status"
