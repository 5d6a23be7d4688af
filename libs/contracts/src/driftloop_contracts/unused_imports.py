"""Keep a package a process never uses from being imported by the libraries it does use.

Why: pandas imports pyarrow whenever it is installed (the workspace installs it for the drift
consumer's Parquet log), and scikit-learn and MLflow import pandas. A model replica and the
MLflow server read no Parquet and build no Arrow-backed frame, and pandas 2 runs without
pyarrow, so refusing it saves ~30 MiB of RSS in each (docs/performance.md, "Memory at rest").

A finder on ``sys.meta_path`` refuses the import with ``ModuleNotFoundError``, which the
libraries already treat as "not installed". Not ``sys.modules[name] = None``: scikit-learn
takes any entry there for the module and fails on ``None``. Install it before the first import
of the library that would pull the package in.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder

__all__ = ["refuse_imports"]


class _Refuse(MetaPathFinder):
    def __init__(self, names: frozenset[str], who: str) -> None:
        self.names = names
        self.who = who

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: object = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is not loaded in {self.who}", name=fullname)


def refuse_imports(*names: str, who: str) -> None:
    """Refuse every later import of the top-level packages ``names`` in this process."""
    sys.meta_path.insert(0, _Refuse(frozenset(names), who))
