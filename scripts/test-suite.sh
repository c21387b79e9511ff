#!/usr/bin/env bash
# The test run of `make test`: the fast tests (everything but e2e) side by side with
# the e2e suite, which then runs again on the Postgres tier for the modules given as
# arguments. The e2e tests mostly wait on the cluster (the CPU is half idle or more
# while they run), so the fast tests add no wall time beside them; they run niced,
# so that the cluster's timing stays the e2e tests'. Their report follows the e2e
# ones' and is kept in $FAST_LOG.
#
#   scripts/test-suite.sh POSTGRES_TIER_MODULE...
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bin=${VENV_BIN:-.venv/bin}
log=${FAST_LOG:-build/pytest-fast.log}
mkdir -p "$(dirname "$log")"

nice -n 10 "$bin/pytest" -m 'not e2e' >"$log" 2>&1 &
fast=$!
trap 'kill "$fast" 2>/dev/null; exit 130' INT TERM
echo "test-suite: the fast tests run beside the e2e suite (pid $fast, log $log)"

"$bin/pytest" -m e2e
e2e=$?
if ((e2e == 0)); then
  TETHER_E2E_STORE=postgres "$bin/pytest" -m e2e "$@"
  e2e=$?
fi

wait "$fast"
fast_rc=$?
echo
echo "test-suite: the fast tests' report ($log):"
cat "$log"
if ((e2e != 0 || fast_rc != 0)); then
  echo "test-suite: failed (e2e exit $e2e, fast tests exit $fast_rc)" >&2
  exit 1
fi
