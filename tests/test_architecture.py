"""The import contracts of the root ``pyproject.toml`` (``[tool.importlinter]``) hold.

They say that dependencies point inward (the CLI and the services never import each other; the
libraries never import a service or the CLI) and that no package has an import cycle. Running
``lint-imports`` here makes the README's unit-test command check them as well as CI: a change
that breaks one fails naming the contract, followed by import-linter's own explanation (which
imports to remove).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The console script installed in the same venv as the running interpreter.
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contract_names() -> list[str]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return [c["name"] for c in config["tool"]["importlinter"]["contracts"]]


def broken(report: str, names: list[str]) -> list[str]:
    """The contracts ``lint-imports`` marks BROKEN (whitespace-insensitive: it wraps lines)."""
    flat = " ".join(report.split())
    return [name for name in names if f"{' '.join(name.split())} BROKEN" in flat]


def test_import_contracts_are_kept() -> None:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: run `uv sync` (dev group)"
    names = contract_names()
    assert names, "pyproject.toml [tool.importlinter] declares no contracts"
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = result.stdout + result.stderr
    if result.returncode != 0:
        failed = broken(report, names) or ["(none named; lint-imports itself failed)"]
        details = report.split("Broken contracts", 1)[-1].strip().lstrip("-").strip()
        raise AssertionError(
            "import contract broken: " + "; ".join(f"'{n}'" for n in failed) + f"\n\n{details}\n\n"
            "(`uv run lint-imports` at the repository root shows the same; the contracts are "
            "in pyproject.toml [tool.importlinter])"
        )
    kept = " ".join(report.split())
    missing = [n for n in names if f"{' '.join(n.split())} KEPT" not in kept]
    assert not missing, f"lint-imports did not check: {missing}\n{report}"
