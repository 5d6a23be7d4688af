"""`driftloop loop brake|reset-brake`: see and release the bridge's circuit breaker.

The bridge stops triggering retrains once it accepted ``BRAKE_MAX_TRIGGERS`` within
``BRAKE_WINDOW_SECONDS`` (the ``RetrainingChurn`` alert fires); it stays braked until a person
resets it here or ``BRAKE_HOLD_SECONDS`` pass. Both commands call the bridge's authenticated
``/brake`` endpoints with this stack's bridge URL and webhook token
(``DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN``, the same variable the bridge reads).

`driftloop loop approve|reject RUN_ID` answers a retraining run's approval request
(``approval=manual``) through Airflow's REST API (:mod:`driftloop_cli.approval`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from driftloop_contracts.approval import APPROVE, REJECT

from ..approval import ApprovalCallError, answer
from ..settings import StackSettings

app = typer.Typer(
    no_args_is_help=True,
    help="Operate the retraining loop: the bridge's circuit breaker (brake, reset-brake) and "
    "approval of a promotion (approve, reject).",
)
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the width

TIMEOUT_S = 10.0

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Bridge base URL (default: this stack's bridge)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


class BridgeCallError(Exception):
    """The bridge could not be asked, or said no; the message says what to do."""


def call_bridge(method: str, url: str, path: str, token: str) -> dict[str, Any]:
    """One authenticated call to the bridge; every failure becomes a one-line :class:`BridgeCallError`."""
    try:
        resp = httpx.request(
            method,
            f"{url.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise BridgeCallError(
            f"cannot reach the bridge at {url} ({exc.__class__.__name__}: {exc}). Is the stack "
            "up? Start it with `driftloop up`; for another stack pass --base-port/--state-dir "
            "before the command, or --url."
        ) from None
    if resp.status_code == 401:
        raise BridgeCallError(
            f"the bridge at {url} refused the token (401): set DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN "
            "to the token the bridge was started with."
        )
    if resp.status_code == 404:
        raise BridgeCallError(
            f"{url} has no {path} endpoint (404): is that a driftloop bridge with the brake?"
        )
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message", resp.text)
        except ValueError:
            message = resp.text
        raise BridgeCallError(f"the bridge answered {resp.status_code}: {message}")
    body: dict[str, Any] = resp.json()
    return body


def _target(ctx: typer.Context, url: str | None) -> tuple[str, str]:
    s: StackSettings = ctx.obj
    return url or s.urls.bridge, s.bridge_webhook_token.get_secret_value()


def brake_table(state: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    if not state["enabled"]:
        engaged = "off (BRAKE_MAX_TRIGGERS=0)"
    else:
        engaged = "[red]ENGAGED[/]" if state["engaged"] else "[green]released[/]"
    table.add_row("brake", engaged)
    table.add_row("since", state.get("since") or "")
    table.add_row("lets go by itself at", state.get("until") or "")
    table.add_row(
        "budget",
        f"{state['max_triggers']} trigger(s) per {state['window_seconds']:g}s "
        f"(hold {state['hold_seconds']:g}s)",
    )
    table.add_row("triggers in window", str(state["triggers_in_window"]))
    for t in state["triggers"]:
        table.add_row(f"  {t['accepted_at']}", t["dag_run_id"])
    return table


@app.command()
def brake(ctx: typer.Context, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The circuit breaker's state: engaged or not, since when, the triggers in the window."""
    base, token = _target(ctx, url)
    try:
        state = call_bridge("GET", base, "/brake", token)
    except BridgeCallError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(state, indent=2))
        return
    console.print(brake_table(state, f"bridge brake ({base})"))


@app.command("reset-brake")
def reset_brake(ctx: typer.Context, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Release the circuit breaker and forget the window's triggers: the loop retrains again."""
    base, token = _target(ctx, url)
    try:
        answer = call_bridge("POST", base, "/brake/reset", token)
    except BridgeCallError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    was = answer["was"]
    if was["engaged"]:
        console.print(
            f"brake [green]released[/] (was engaged since {was['since']}, "
            f"{was['triggers_in_window']} trigger(s) in the window, now forgotten)"
        )
    else:
        console.print(
            f"brake was not engaged; {was['triggers_in_window']} trigger(s) in the window forgotten"
        )


AirflowUrlOption = Annotated[
    str | None, typer.Option("--url", help="Airflow base URL (default: this stack's Airflow)")
]


def _answer_approval(ctx: typer.Context, run_id: str, option: str, url: str | None) -> None:
    s: StackSettings = ctx.obj
    base = url or s.urls.airflow
    try:
        reply = answer(
            base, s.airflow_username, s.airflow_password.get_secret_value(), run_id, option
        )
    except ApprovalCallError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    by = (reply.get("responded_by") or {}).get("name", "")
    verb = "[green]approved[/]" if option == APPROVE else "[yellow]rejected[/]"
    console.print(f"{run_id}: {verb} by {by}; the run continues with decide")


@app.command()
def approve(ctx: typer.Context, run_id: str, url: AirflowUrlOption = None) -> None:
    """Approve the promotion a retraining run (approval=manual) is waiting for."""
    _answer_approval(ctx, run_id, APPROVE, url)


@app.command()
def reject(ctx: typer.Context, run_id: str, url: AirflowUrlOption = None) -> None:
    """Reject it: the challenger stays a version tagged rejected, the champion stays."""
    _answer_approval(ctx, run_id, REJECT, url)
