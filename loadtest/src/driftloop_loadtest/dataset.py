"""The rows locust users sample: California housing, renamed to the API's feature names.

Loaded once per locust process and kept as plain Python floats, because a gevent user
sampling a row per request should not touch pandas on the hot path.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from driftloop_contracts import FEATURE_NAMES, SOURCE_TO_FEATURE, TARGET_SOURCE_COLUMN

__all__ = ["HousingRows", "default_data_home", "load_rows"]

#: Where this workspace keeps the offline scikit-learn cache (as driftloop_cli's settings do).
_SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "scikit_learn_data"


def default_data_home() -> Path | None:
    """``$SCIKIT_LEARN_DATA``, else the workspace's shared cache if present, else ``None``
    (scikit-learn's own default, ``~/scikit_learn_data``)."""
    env = os.environ.get("SCIKIT_LEARN_DATA")
    if env:
        return Path(env)
    return _SHARED_DATA if _SHARED_DATA.is_dir() else None


@dataclass(frozen=True)
class HousingRows:
    """Feature rows (API names, contract order) and their targets (100,000 USD units)."""

    rows: tuple[dict[str, float], ...]
    targets: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.rows or len(self.rows) != len(self.targets):
            raise ValueError("need at least one row and one target per row")

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, rng: random.Random) -> tuple[dict[str, float], float]:
        """One row (a fresh copy, callers may change it) and its target."""
        i = rng.randrange(len(self.rows))
        return dict(self.rows[i]), self.targets[i]


def load_rows(data_home: str | Path | None = None) -> HousingRows:
    """Read scikit-learn's cached California housing data, offline.

    ``data_home`` (or ``SCIKIT_LEARN_DATA``) must hold ``cal_housing_py3.pkz``; nothing is
    downloaded, so a machine without the cache fails here with a message saying where to put it.
    """
    from sklearn.datasets import fetch_california_housing

    resolved = Path(data_home) if data_home else default_data_home()
    home = str(resolved) if resolved else None
    try:
        bunch = fetch_california_housing(data_home=home, as_frame=True, download_if_missing=False)
    except OSError as exc:
        raise RuntimeError(
            f"California housing data not found in {home or '~/scikit_learn_data'}: set "
            f"SCIKIT_LEARN_DATA (or --data-home) to a directory holding cal_housing_py3.pkz ({exc})"
        ) from exc
    frame = bunch.frame.rename(columns=SOURCE_TO_FEATURE)
    missing = [name for name in FEATURE_NAMES if name not in frame.columns]
    if missing:
        raise RuntimeError(f"California housing data lacks the columns for {missing}")
    features = frame.loc[:, list(FEATURE_NAMES)].astype("float64")
    rows = tuple(
        dict(zip(FEATURE_NAMES, map(float, values), strict=True))
        for values in features.itertuples(index=False, name=None)
    )
    targets = tuple(float(v) for v in frame[TARGET_SOURCE_COLUMN].to_numpy())
    return HousingRows(rows, targets)
