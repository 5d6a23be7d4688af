"""Make loadtest/'s flat modules importable (locust itself puts the locustfile's folder on
sys.path, so they import each other as ``scenarios``, ``options``, ...)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOADTEST_DIR = Path(__file__).resolve().parent.parent
if str(LOADTEST_DIR) not in sys.path:
    sys.path.insert(0, str(LOADTEST_DIR))

SHARED_DATA = LOADTEST_DIR.parent.parent / "shared" / "data" / "scikit_learn_data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("SCIKIT_LEARN_DATA", str(SHARED_DATA))

# Unit tests only use locust's argument parser; gevent's monkey-patching would leak into the
# pytest process. Subprocess runs of locust get an environment without this variable.
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
