"""`driftloop thresholds` against the stack's real Redis."""

from __future__ import annotations

import json

import pytest

from driftloop_contracts import DEFAULT_THRESHOLDS

pytestmark = pytest.mark.integration


def effective(driftloop, statistic: str, feature: str) -> tuple[float, str]:
    result = driftloop("thresholds", "show", "--json")
    assert result.returncode == 0, result.stderr
    row = next(
        r
        for r in json.loads(result.stdout)
        if r["statistic"] == statistic and r["feature"] == feature
    )
    return row["value"], row["source"]


def test_set_show_reset_round_trip(driftloop) -> None:
    try:
        assert driftloop("thresholds", "set", "ks", "0.31").returncode == 0
        assert (
            driftloop("thresholds", "set", "psi", "0.9", "--feature", "block_latitude").returncode
            == 0
        )
        assert effective(driftloop, "ks", "average_rooms") == (0.31, "override")
        assert effective(driftloop, "psi", "block_latitude") == (0.9, "feature override")
        assert effective(driftloop, "psi", "average_rooms") == (
            DEFAULT_THRESHOLDS["psi"],
            "default",
        )
    finally:
        assert driftloop("thresholds", "reset").returncode == 0
    assert effective(driftloop, "ks", "average_rooms") == (DEFAULT_THRESHOLDS["ks"], "default")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", "psi", "abc"), "not a number"),
        (("set", "psi", "--", "-1"), ">= 0"),
        (("set", "nope", "1"), "unknown statistic"),
        (("set", "psi", "1", "--feature", "rooms"), "unknown feature"),
    ],
)
def test_bad_values_are_refused_naming_the_problem(driftloop, args, message) -> None:
    result = driftloop("thresholds", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_stack_is_named_not_a_traceback(tmp_path) -> None:
    """With no stack on the chosen ports, the CLI says which Redis it looked for and what to do."""
    import socket
    import subprocess
    import sys

    from driftloop_contracts import PortPlan

    with socket.socket() as probe:  # a free port: the stack's Redis sits at base + offset
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    base = free - PortPlan(0).redis
    result = subprocess.run(
        [sys.executable, "-m", "driftloop_cli.main", "--base-port", str(base),
         "--state-dir", str(tmp_path), "thresholds", "show"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert f"127.0.0.1:{free}" in result.stderr
    assert "driftloop up" in result.stderr
    assert "Traceback" not in result.stderr
