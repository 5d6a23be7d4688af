"""`driftloop thresholds` against the stack's real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from driftloop_cli.settings import REPO_ROOT
from driftloop_contracts import DEFAULT_THRESHOLDS

pytestmark = pytest.mark.integration


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "driftloop_cli.main",
            "--base-port",
            str(stack.ports.base),
            "--state-dir",
            str(stack.state_dir),
            "thresholds",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def effective(stack, statistic: str, feature: str) -> tuple[float, str]:
    result = cli(stack, "show", "--json")
    assert result.returncode == 0, result.stderr
    row = next(
        r
        for r in json.loads(result.stdout)
        if r["statistic"] == statistic and r["feature"] == feature
    )
    return row["value"], row["source"]


def test_set_show_reset_round_trip(stack) -> None:
    try:
        assert cli(stack, "set", "ks", "0.31").returncode == 0
        assert cli(stack, "set", "psi", "0.9", "--feature", "block_latitude").returncode == 0
        assert effective(stack, "ks", "average_rooms") == (0.31, "override")
        assert effective(stack, "psi", "block_latitude") == (0.9, "feature override")
        assert effective(stack, "psi", "average_rooms") == (DEFAULT_THRESHOLDS["psi"], "default")
    finally:
        assert cli(stack, "reset").returncode == 0
    assert effective(stack, "ks", "average_rooms") == (DEFAULT_THRESHOLDS["ks"], "default")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", "psi", "abc"), "not a number"),
        (("set", "psi", "--", "-1"), ">= 0"),
        (("set", "nope", "1"), "unknown statistic"),
        (("set", "psi", "1", "--feature", "rooms"), "unknown feature"),
    ],
)
def test_bad_values_are_refused_naming_the_problem(stack, args, message) -> None:
    result = cli(stack, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
