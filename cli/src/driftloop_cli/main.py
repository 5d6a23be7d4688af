"""The `driftloop` command: run the local stack and operate the loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from driftloop_contracts import SettingsError, load_settings

from . import memory, stack
from .settings import StackSettings

app = typer.Typer(no_args_is_help=True, help=__doc__, add_completion=False)
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

from .commands.loop import app as loop_app  # noqa: E402
from .commands.thresholds import app as thresholds_app  # noqa: E402

app.add_typer(thresholds_app, name="thresholds")
app.add_typer(loop_app, name="loop")


def settings(ctx: typer.Context) -> StackSettings:
    return ctx.obj


@app.callback()
def main(
    ctx: typer.Context,
    base_port: Annotated[
        int | None, typer.Option(help="Base port (env DRIFTLOOP_BASE_PORT)")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="State directory (env DRIFTLOOP_STATE_DIR)")
    ] = None,
) -> None:
    overrides = {k: v for k, v in {"base_port": base_port, "state_dir": state_dir}.items() if v}
    try:
        ctx.obj = load_settings(StackSettings, **overrides).resolved()
    except SettingsError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def status_table(statuses: list[stack.ComponentStatus], title: str = "driftloop stack") -> Table:
    table = Table(
        title=title, caption=f"memory (RSS) in all: {memory.mib(stack.total_rss(statuses))}"
    )
    for col in ("component", "state", "health", "ready", "memory", "url", "detail"):
        table.add_column(col, justify="right" if col == "memory" else "left")
    for st in statuses:
        health = "[green]healthy[/]" if st.healthy else "[yellow]waiting[/]"
        if st.ready is None:
            ready, detail = "", st.detail
        elif st.ready:
            ready, detail = "[green]ready[/]", st.detail
        else:
            ready, detail = "[red]not ready[/]", st.ready_detail
        table.add_row(st.name, st.state, health, ready, memory.mib(st.rss_bytes), st.url, detail)
    return table


@app.command()
def up(ctx: typer.Context) -> None:
    """Start every component under supervisord and wait until all are healthy (idempotent)."""
    s = settings(ctx)
    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:

            def show(statuses: list[stack.ComponentStatus]) -> None:
                ok = sum(st.healthy for st in statuses)
                live.update(status_table(statuses, f"starting… {ok}/{len(statuses)} healthy"))

            statuses = stack.up(s, on_progress=show)
    except stack.StackError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(status_table(statuses))
    console.print(f"[green]stack up[/] (state in {s.state_dir}; `driftloop down` stops it)")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop everything `up` started, and nothing else."""
    s = settings(ctx)
    if stack.down(s):
        console.print("stack stopped")
    else:
        console.print("stack was not running")


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Each component's state, URL, health and (our services) readiness with the reasons why not.

    Exit code 1 unless every component is healthy (alive); readiness is reported, not required
    (a replica is not ready before the first champion exists).
    """
    statuses = stack.status(settings(ctx))
    if as_json:
        doc = {"components": stack.as_json(statuses), "total_rss_bytes": stack.total_rss(statuses)}
        print(json.dumps(doc, indent=2))
    else:
        console.print(status_table(statuses))
    if not all(st.healthy for st in statuses):
        raise typer.Exit(1)


@app.command()
def logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Component name, as in `driftloop status`")],
    lines: Annotated[int, typer.Option("-n", help="Lines to show")] = 50,
    follow: Annotated[bool, typer.Option("-f", help="Keep printing new lines")] = False,
) -> None:
    """Show a component's log."""
    s = settings(ctx)
    path = s.logs_dir / f"{name}.log"
    if not path.exists():
        known = sorted(p.stem for p in s.logs_dir.glob("*.log"))
        err.print(f"[red]error:[/] no log for {name!r} in {s.logs_dir}; known: {', '.join(known)}")
        raise typer.Exit(2)
    subprocess.run(["tail", f"-n{lines}", *(["-F"] if follow else []), str(path)], check=False)


@app.command("dead-letters")
def dead_letters(
    ctx: typer.Context,
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help="predictions, feedback or model-events (default: all)"),
    ] = None,
    limit: Annotated[int, typer.Option(help="Newest dead letters per topic", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="The envelopes as JSON lines")] = False,
) -> None:
    """The newest records driftloop skipped (from <topic>.dlq): origin, reason, first bytes."""
    import asyncio

    from .commands.dead_letters import TOPIC_NAMES, read_dead_letters, rows

    topics = topic or list(TOPIC_NAMES)
    unknown = [t for t in topics if t not in TOPIC_NAMES]
    if unknown:
        err.print(f"[red]error:[/] unknown topic {unknown}; choose from {', '.join(TOPIC_NAMES)}")
        raise typer.Exit(2)
    s = settings(ctx)
    for name in topics:
        try:
            records = asyncio.run(read_dead_letters(s.urls.kafka, name, limit=limit))
        except Exception as exc:
            err.print(
                f"[red]error:[/] cannot read {name}.dlq from Kafka at {s.urls.kafka} ({exc!r}). "
                "Is the stack up? (`driftloop status`)"
            )
            raise typer.Exit(2) from None
        if as_json:
            for r in records:
                if r.letter is not None:
                    print(r.letter.model_dump_json())
            continue
        table = Table(title=f"{name}.dlq: newest {len(records)} (newest first)")
        for column in ("when", "origin", "reason", "error", "size", "value"):
            table.add_column(column, overflow="fold")
        for row in rows(records):
            # Text, not markup: a hostile value's "[" must print as it is
            table.add_row(
                *(Text(row[c]) for c in ("when", "origin", "reason", "error", "size", "value"))
            )
        console.print(table)


@app.command()
def bootstrap(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option(help="Train and promote even if a champion exists")
    ] = False,
) -> None:
    """Train and register the first champion (does nothing if one exists, unless --force)."""
    from .commands.bootstrap import run_bootstrap

    raise typer.Exit(run_bootstrap(settings(ctx), force=force, console=console))


@app.command()
def demo(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="Simulated users")] = 8,
    steady: Annotated[int, typer.Option(help="Seconds of steady traffic before the drift")] = 30,
    max_run: Annotated[int, typer.Option(help="Upper bound on the traffic run, seconds")] = 900,
    no_traffic: Annotated[bool, typer.Option(help="Only bring the stack up and bootstrap")] = False,
    target: Annotated[
        str,
        typer.Option(
            help="local: the native stack (started if needed); docker: a running "
            "`docker compose up` stack on its published ports"
        ),
    ] = "local",
) -> None:
    """Run the loop: stack up, champion bootstrapped, traffic with drift, the loop closing live."""
    if target not in {"local", "docker"}:
        err.print(f"[red]error:[/] --target must be local or docker, not {target!r}")
        raise typer.Exit(2)
    if target == "docker":
        from driftloop_contracts import DOCKER_BASE_PORT

        ctx.obj = settings(ctx).model_copy(update={"base_port": DOCKER_BASE_PORT})
    s = settings(ctx)
    if target == "local":
        up(ctx)
    from .commands.bootstrap import run_bootstrap

    rc = run_bootstrap(s, force=False, console=console)
    if rc or no_traffic:
        raise typer.Exit(rc)
    from .commands.demo import run_demo
    from .demo import DemoOptions

    summary = run_demo(s, DemoOptions(users=users, steady_s=steady, max_run_s=max_run), console)
    if summary is None or summary.error or summary.failed_requests:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
