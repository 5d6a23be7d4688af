"""Environment for the load test's unit tests (the package itself is a workspace member)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "scikit_learn_data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("SCIKIT_LEARN_DATA", str(SHARED_DATA))

# Unit tests only use locust's argument parser; gevent's monkey-patching would leak into the
# pytest process. Subprocess runs of locust get an environment without this variable.
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
