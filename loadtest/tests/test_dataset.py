"""The rows users sample: the California housing cache, renamed through the contract."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from driftloop_contracts import FEATURE_NAMES
from driftloop_loadtest.dataset import HousingRows, load_rows


@pytest.fixture(scope="module")
def rows() -> HousingRows:
    try:
        return load_rows()
    except RuntimeError as exc:  # no offline cache on this machine
        pytest.skip(str(exc))


def test_rows_carry_the_contract_feature_names_and_targets(rows: HousingRows) -> None:
    assert len(rows) == 20_640
    assert all(tuple(r) == FEATURE_NAMES for r in rows.rows[:100])
    assert min(rows.targets) > 0.1 and max(rows.targets) < 5.1  # 100,000 USD units


def test_sample_returns_a_copy(rows: HousingRows) -> None:
    row, target = rows.sample(random.Random(0))
    row[FEATURE_NAMES[0]] = -1.0
    assert all(r[FEATURE_NAMES[0]] != -1.0 for r in rows.rows)
    assert isinstance(target, float)


def test_missing_cache_fails_saying_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="SCIKIT_LEARN_DATA"):
        load_rows(tmp_path)


def test_rows_need_targets() -> None:
    with pytest.raises(ValueError):
        HousingRows((), ())
