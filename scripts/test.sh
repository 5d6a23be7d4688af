#!/usr/bin/env bash
# The test suite: unit tests, integration and end-to-end tests against the real local stack
# (started by the session fixture on ports 28000+), then the DAG tests inside the Airflow env.
# Extra arguments go to the main pytest run (e.g. `./scripts/test.sh -m "not e2e"`).
set -uo pipefail
cd "$(dirname "$0")/.."
export SCIKIT_LEARN_DATA="${SCIKIT_LEARN_DATA:-$PWD/../shared/data/scikit_learn_data}"

was_running=0
pgrep -f "\.driftloop-test/" >/dev/null && was_running=1
# Our Python processes that exist before the run (e.g. your own dev stack) are not the suite's.
ours() { pgrep -f "^$PWD/\.venv(-airflow)?/bin/" | sort; }
before="$(ours)"

uv run --frozen pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
[ "$rc" = 0 ] || exit "$rc"

if [ -d airflow/tests ]; then
  .venv-airflow/bin/python -m pytest -q -p no:cacheprovider airflow/tests
  rc=$?
  if [ "$rc" = 5 ]; then echo "error: no DAG tests collected" >&2; exit 1; fi
  [ "$rc" = 0 ] || exit "$rc"
fi

# Nothing the suite started may outlive it (unless a stack was already up and is being reused).
if [ "$was_running" = 0 ] && [ -z "${DRIFTLOOP_TEST_KEEP_STACK:-}" ] && pgrep -f "\.driftloop-test/" >/dev/null; then
  echo "error: processes of the test stack are still running:" >&2
  pgrep -af "\.driftloop-test/" >&2
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
