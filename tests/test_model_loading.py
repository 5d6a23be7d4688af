"""No code path deserialises a model except the checked skops loader (docs/security.md).

A static guard: the integration tests prove the loader refuses bad artifacts, this proves no
other loader came back (a pyfunc fallback, ``mlflow.sklearn.load_model``, a pickle opt-in).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["libs", "services", "cli", "bench", "airflow/dags", "loadtest"]
FORBIDDEN = {
    "mlflow.sklearn.load_model(": re.compile(r"mlflow\.sklearn\.load_model\("),
    "mlflow.pyfunc": re.compile(r"mlflow\.pyfunc\b|pyfunc\.load_model"),
    "pickle load": re.compile(r"\b(c?pickle|cloudpickle|joblib)\.loads?\("),
    "cloudpickle import": re.compile(r"^\s*(import|from)\s+cloudpickle\b", re.MULTILINE),
    "pickle opt-in": re.compile(r"[\"']MLFLOW_ALLOW_PICKLE_DESERIALIZATION[\"']"),
}
#: bench_serving.py's opt-in (d) baseline runs MLflow's own server, documented there.
ALLOWED = {("pickle opt-in", "bench/bench_serving.py")}


def source_files() -> list[Path]:
    files: list[Path] = []
    for top in SOURCES:
        files += [
            p
            for p in (REPO / top).rglob("*.py")
            if "tests" not in p.relative_to(REPO).parts and ".venv" not in p.parts
        ]
    return files


def test_no_model_is_loaded_but_through_the_checked_loader() -> None:
    files = source_files()
    assert len(files) > 50
    found = [
        f"{path.relative_to(REPO)}: {what}"
        for path in files
        for what, pattern in FORBIDDEN.items()
        if pattern.search(path.read_text())
        and (what, path.relative_to(REPO).as_posix()) not in ALLOWED
    ]
    assert not found, found
