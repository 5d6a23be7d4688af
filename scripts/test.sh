#!/usr/bin/env bash
# The test suite:
#   0. ruff (lint and format); the import contracts and mypy run as unit tests
#      (tests/test_architecture.py, tests/test_types.py);
#   1. the unit part (everything that needs no stack) DRIFTLOOP_TEST_UNIT_RUNS times (default 5),
#      each in a new random order (pytest-randomly, off unless asked for; the seed is printed:
#      rerun that order with `uv run pytest -p randomly --randomly-seed=N -m "not integration and
#      not e2e and not airflow"`): a test that passes only in one order, or only when the event
#      loop happens to interleave one way, fails here rather than for a user;
#   2. the whole suite once, in file order: unit, integration and end-to-end tests against the
#      real local stack (started by the session fixture on ports 28000+);
#   3. the DAG tests inside the Airflow env.
# Extra arguments replace steps 1-2 with one pytest run of your own
# (e.g. `./scripts/test.sh -m "not e2e"`).
set -uo pipefail
cd "$(dirname "$0")/.."
export SCIKIT_LEARN_DATA="${SCIKIT_LEARN_DATA:-$PWD/../shared/data/scikit_learn_data}"

# Only this checkout's test stack counts (another checkout may run its own on other ports).
test_stack="$PWD/\.driftloop-test/"
was_running=0
pgrep -f "$test_stack" >/dev/null && was_running=1
# Our Python processes that exist before the run (e.g. your own dev stack) are not the suite's.
ours() { pgrep -f "^$PWD/\.venv(-airflow)?/bin/" | sort; }
before="$(ours)"

# pytest's exit code 5 (no test collected) is a failure too.
run_pytest() {
  uv run --frozen pytest "$@"
  local rc=$?
  if [ "$rc" = 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
  [ "$rc" = 0 ] || exit "$rc"
}

if [ "$#" -gt 0 ]; then
  run_pytest "$@"
else
  echo "[test] lint: ruff check, ruff format --check"
  uv run --frozen ruff check . && uv run --frozen ruff format --check . || exit 1
  unit='not integration and not e2e and not airflow'
  runs="${DRIFTLOOP_TEST_UNIT_RUNS:-5}"
  for i in $(seq 1 "$runs"); do
    seed="$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"
    echo "[test] unit part, run $i of $runs, random order: --randomly-seed=$seed"
    run_pytest -q -p randomly --randomly-seed="$seed" -m "$unit"
  done
  echo "[test] the whole suite, file order"
  run_pytest
fi

if [ -d airflow/tests ]; then
  .venv-airflow/bin/python -m pytest -q -p no:cacheprovider airflow/tests
  rc=$?
  if [ "$rc" = 5 ]; then echo "error: no DAG tests collected" >&2; exit 1; fi
  [ "$rc" = 0 ] || exit "$rc"
fi

# Nothing the suite started may outlive it (unless a stack was already up and is being reused).
if [ "$was_running" = 0 ] && [ -z "${DRIFTLOOP_TEST_KEEP_STACK:-}" ] && pgrep -f "$test_stack" >/dev/null; then
  echo "error: processes of the test stack are still running:" >&2
  pgrep -af "$test_stack" >&2
  exit 1
fi
# ... nor any helper process (e.g. a worker pool's child orphaned by a killed service).
if [ -z "${DRIFTLOOP_TEST_KEEP_STACK:-}" ] && [ "$was_running" = 0 ]; then
  deadline=$((SECONDS + 30))
  while left="$(comm -13 <(echo "$before") <(ours) | grep -v "^$$\$")" && [ -n "$left" ] \
        && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
  if [ -n "$left" ]; then
    echo "error: processes started by the suite are still running:" >&2
    for pid in $left; do ps -o pid=,args= -p "$pid" >&2; done
    exit 1
  fi
fi
