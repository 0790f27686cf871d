#!/usr/bin/env bash
# The Python SDK's tests as CI runs them (.ci/run): a virtualenv in $TMPDIR, the
# SDK installed from sdk/python with its test extra (so the package as built is
# what is tested), the herald binary built, then pytest. Fails when the tests
# cannot run; pytest's "no tests collected" (exit 5) is a failure too.
#
#   sdk/python/scripts/ci.sh [pytest args...]
set -euo pipefail

SDK="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="$(cd "$SDK/../.." && pwd)"
VENV="${TMPDIR:-/tmp}/herald-sdk-venv"
PYTHON="${PYTHON:-python3}"

# Nothing from the caller's environment may change how the test servers start.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^HERALD_' || true)

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "==> pip install $SDK[test]"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SDK[test]"

# With an example in the build, dev-dependencies' features are on as in `cargo test`
# (which .ci/run runs first), so nothing is compiled a second time with other features
# (the AG-UI step of .ci/run builds the same).
echo "==> cargo build --bin herald --example executor"
(cd "$ROOT" && cargo build --bin herald --example executor)
export HERALD_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/herald"

echo "==> pytest sdk/python/tests"
set +e
(cd "$SDK" && "$VENV/bin/python" -m pytest -q "$@")
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "sdk/python: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
