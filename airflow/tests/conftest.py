"""DAG tests run in the Airflow environment only; from the workspace venv they skip.

Run: ``.venv-airflow/bin/python -m pytest airflow/tests``. Airflow reads its configuration
when first imported, so a throw-away AIRFLOW_HOME is set up before any test imports it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_home = tempfile.mkdtemp(prefix="driftloop-airflow-test-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
os.environ.setdefault("AIRFLOW_HOME", _home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
