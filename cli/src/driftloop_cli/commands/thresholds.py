"""`driftloop thresholds show|set|reset`: change alert thresholds at run time (kept in Redis).

The drift consumer exports the effective values as `driftloop_drift_threshold` gauges, which the
Prometheus and Grafana rules compare against, so a change takes effect within one scrape.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..settings import StackSettings

app = typer.Typer(no_args_is_help=True, help=__doc__)
console = Console()
err = Console(stderr=True)


def _redis_url(ctx: typer.Context) -> str:
    s: StackSettings = ctx.obj
    return s.urls.redis


def _fail(exc: Exception, ctx: typer.Context) -> typer.Exit:
    """One line naming the problem; an unreachable Redis says which stack was looked for."""
    from redis.exceptions import ConnectionError as RedisUnreachable

    if isinstance(exc, RedisUnreachable):
        err.print(
            f"[red]error:[/] cannot reach the stack's Redis at {_redis_url(ctx)} ({exc}). "
            "Is the stack up? Start it with `driftloop up`; for another stack pass "
            "--base-port/--state-dir before the command."
        )
    else:
        err.print(f"[red]error:[/] {exc}")
    return typer.Exit(2)


@app.command()
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Every effective threshold and where it comes from (default or override)."""
    from driftloop_contracts.threshold_store import show_thresholds

    try:
        rows = show_thresholds(_redis_url(ctx))
    except Exception as exc:  # Redis down: say so, no traceback
        raise _fail(exc, ctx) from None
    if as_json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    table = Table(title="drift thresholds")
    for col in ("statistic", "feature", "value", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.statistic, r.feature or "(all)", f"{r.value:g}", r.source)
    console.print(table)


@app.command("set")
def set_(
    ctx: typer.Context,
    statistic: Annotated[str, typer.Argument(help="psi, ks, wasserstein, drift_share, rmse_ratio")],
    value: Annotated[str, typer.Argument(help="New threshold (a number >= 0)")],
    feature: Annotated[str | None, typer.Option(help="Only for this feature")] = None,
) -> None:
    """Override a threshold for every feature, or for one with --feature."""
    from driftloop_contracts.threshold_store import set_threshold

    try:
        row = set_threshold(_redis_url(ctx), statistic, value, feature)
    except Exception as exc:  # ThresholdError (bad input) or Redis down: no traceback
        raise _fail(exc, ctx) from None
    console.print(
        f"{row.statistic} {row.feature or '(all features)'} = {row.value:g} ({row.source})"
    )


@app.command()
def reset(
    ctx: typer.Context,
    statistic: Annotated[str | None, typer.Argument(help="Only this statistic's overrides")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature's override")] = None,
) -> None:
    """Drop overrides (all, one statistic's, or one feature's) so defaults apply again."""
    from driftloop_contracts.threshold_store import reset_thresholds

    try:
        removed = reset_thresholds(_redis_url(ctx), statistic, feature)
    except Exception as exc:  # ThresholdError (bad input) or Redis down: no traceback
        raise _fail(exc, ctx) from None
    console.print(f"removed {removed} override(s)")
