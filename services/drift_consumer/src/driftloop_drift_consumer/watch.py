"""The post-promotion watch, pure: compare the new champion with the previous one on the same
labelled requests and decide ``rolled_back`` or ``kept``. No I/O (see :mod:`.watch_store` for
the Redis sums, :mod:`.rollback` for carrying a decision out).

During a watch every prediction event carries the previous champion's answer as
``shadow_prediction`` (alias ``shadow``). Once its feedback joins, a labelled row holds both
errors, ``prediction - actual`` and ``shadow_prediction - actual``; :func:`watch_rows` picks
those rows per ``(champion version, shadow version)`` pair, and :class:`ErrorSums` adds them up.

The rule (:func:`decide`), with ``margin = DRIFTLOOP_DRIFT_CONSUMER_WATCH_RMSE_MARGIN`` (5 %)
and ``min_rows = ..._WATCH_MIN_ROWS`` (200):

* at least ``min_rows`` labelled rows and champion RMSE > (1 + margin) x shadow RMSE
  -> ``rolled_back`` (at once, even before the watch ends: every minute of a worse champion
  costs);
* otherwise, once the watch has ended (the champion's ``driftloop.watch_until`` tag is past)
  -> ``kept``, whatever the number of rows (too few rows is no evidence against it);
* otherwise nothing yet.

RMSE decides because the loop's other judge (the ``PerformanceDegraded`` alert) reads RMSE;
MAE is recorded beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from driftloop_contracts import ROLLBACK_REASON_PREFIX, WATCH_DECISION_TAG_PREFIX

from .feedback_join import LabelledRow


class Outcome(StrEnum):
    """How a watch ended (label ``outcome`` of ``driftloop_watch_decisions_total``)."""

    ROLLED_BACK = "rolled_back"
    KEPT = "kept"


@dataclass(frozen=True)
class Pair:
    """The two versions a watch compares: the champion and the previous one (shadow)."""

    champion: str
    shadow: str


@dataclass(frozen=True)
class RowErrors:
    """One labelled request of a watch: both models' error on it (USD)."""

    request_id: str
    champion_error: float
    shadow_error: float


@dataclass(frozen=True)
class WatchPolicy:
    rmse_margin: float
    min_rows: int


@dataclass(frozen=True)
class ErrorSums:
    """Sums of both models' absolute and squared errors over the same labelled rows."""

    rows: int = 0
    champion_abs: float = 0.0
    champion_sq: float = 0.0
    shadow_abs: float = 0.0
    shadow_sq: float = 0.0

    @classmethod
    def of(cls, errors: Iterable[tuple[float, float]]) -> ErrorSums:
        """From ``(champion error, shadow error)`` pairs."""
        n, ca, cs, sa, ss = 0, 0.0, 0.0, 0.0, 0.0
        for c, s in errors:
            n += 1
            ca += abs(c)
            cs += c * c
            sa += abs(s)
            ss += s * s
        return cls(n, ca, cs, sa, ss)

    def _mean(self, total: float) -> float:
        return total / self.rows if self.rows else math.nan

    @property
    def champion_rmse(self) -> float:
        return math.sqrt(self._mean(self.champion_sq))

    @property
    def shadow_rmse(self) -> float:
        return math.sqrt(self._mean(self.shadow_sq))

    @property
    def champion_mae(self) -> float:
        return self._mean(self.champion_abs)

    @property
    def shadow_mae(self) -> float:
        return self._mean(self.shadow_abs)


def watch_rows(rows: Iterable[LabelledRow]) -> dict[Pair, list[RowErrors]]:
    """The rows that carry a shadow prediction, per pair (others are not part of a watch)."""
    out: dict[Pair, list[RowErrors]] = {}
    for row in rows:
        if row.shadow_model_version is None or row.shadow_prediction is None:
            continue
        pair = Pair(row.model_version, row.shadow_model_version)
        out.setdefault(pair, []).append(
            RowErrors(row.request_id, row.error, row.shadow_prediction - row.actual)
        )
    return out


def champion_worse(sums: ErrorSums, policy: WatchPolicy) -> bool:
    """Enough rows, and the champion's RMSE over the shadow's by more than the margin."""
    if sums.rows < policy.min_rows:
        return False
    return sums.champion_rmse > (1.0 + policy.rmse_margin) * sums.shadow_rmse


def decide(sums: ErrorSums, policy: WatchPolicy, *, watch_over: bool) -> Outcome | None:
    """The rule of the module docstring; ``None``: keep watching."""
    if champion_worse(sums, policy):
        return Outcome.ROLLED_BACK
    if watch_over:
        return Outcome.KEPT
    return None


@dataclass(frozen=True)
class Decision:
    """A watch decided, with the figures that decided it (stored in Redis, tagged in MLflow)."""

    outcome: Outcome
    pair: Pair
    sums: ErrorSums
    rmse_margin: float
    min_rows: int
    decided_at: datetime

    def summary(self) -> str:
        s = self.sums
        if s.rows == 0:
            return f"0 labelled rows compared (minimum {self.min_rows})"
        return (
            f"v{self.pair.champion} RMSE {s.champion_rmse:,.0f} USD vs "
            f"v{self.pair.shadow} RMSE {s.shadow_rmse:,.0f} USD on {s.rows} labelled rows "
            f"(margin {self.rmse_margin:.0%}, minimum {self.min_rows})"
        )

    def reason(self) -> str:
        """``ModelPromoted.reason`` of a rollback (starts with the contracts' prefix)."""
        return f"{ROLLBACK_REASON_PREFIX}: {self.summary()}"

    def tags(self) -> dict[str, str]:
        """Model-version tags (both versions get the same set)."""
        s = self.sums

        def usd(x: float) -> str:
            return "" if math.isnan(x) else f"{x:.2f}"

        fields = {
            "champion": self.pair.champion,
            "shadow": self.pair.shadow,
            "rows": str(s.rows),
            "champion_rmse_usd": usd(s.champion_rmse),
            "shadow_rmse_usd": usd(s.shadow_rmse),
            "champion_mae_usd": usd(s.champion_mae),
            "shadow_mae_usd": usd(s.shadow_mae),
            "rmse_margin": str(self.rmse_margin),
            "min_rows": str(self.min_rows),
            "decided_at": self.decided_at.isoformat(),
            "reason": self.summary(),
            # last: MLflow sets tags one by one, so a reader that sees the outcome sees it all
            "outcome": self.outcome.value,
        }
        return {f"{WATCH_DECISION_TAG_PREFIX}.{k}": v for k, v in fields.items()}

    def to_json(self) -> dict[str, Any]:
        s = self.sums
        return {
            "outcome": self.outcome.value,
            "champion": self.pair.champion,
            "shadow": self.pair.shadow,
            "sums": [s.rows, s.champion_abs, s.champion_sq, s.shadow_abs, s.shadow_sq],
            "rmse_margin": self.rmse_margin,
            "min_rows": self.min_rows,
            "decided_at": self.decided_at.isoformat(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decision:
        rows, ca, cs, sa, ss = d["sums"]
        return cls(
            Outcome(str(d["outcome"])),
            Pair(str(d["champion"]), str(d["shadow"])),
            ErrorSums(int(rows), float(ca), float(cs), float(sa), float(ss)),
            float(d["rmse_margin"]),
            int(d["min_rows"]),
            datetime.fromisoformat(str(d["decided_at"])),
        )
