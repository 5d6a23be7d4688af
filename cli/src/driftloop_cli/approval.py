"""Answer a retraining run's approval request (``approval=manual``) over Airflow's REST API.

One call: ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails``
with ``{"chosen_options": ["Approve"|"Reject"]}`` and a token from ``POST /auth/token``, the
same call the Airflow UI's "Required actions" page makes (docs/retraining.md, "Approval").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from driftloop_contracts import DAG_ID
from driftloop_contracts.approval import APPROVAL_MAP_INDEX, APPROVAL_TASK_ID

TIMEOUT_S = 15.0


class ApprovalCallError(Exception):
    """Airflow could not be asked, or refused the answer; the message says what to do."""


def hitl_path(run_id: str) -> str:
    """The approval task's HITL resource of one DAG run (under ``/api/v2``)."""
    return (
        f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
        f"{APPROVAL_TASK_ID}/{APPROVAL_MAP_INDEX}/hitlDetails"
    )


def _token(client: httpx.Client, url: str, username: str, password: str) -> str:
    resp = client.post(f"{url}/auth/token", json={"username": username, "password": password})
    if not resp.is_success:
        raise ApprovalCallError(
            f"Airflow at {url} refused the login ({resp.status_code}): set "
            "DRIFTLOOP_AIRFLOW_USERNAME / DRIFTLOOP_AIRFLOW_PASSWORD to its user."
        )
    return str(resp.json()["access_token"])


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))
    except ValueError:
        return resp.text


def answer(url: str, username: str, password: str, run_id: str, option: str) -> dict[str, Any]:
    """Send ``option`` as the answer to ``run_id``'s approval request; Airflow's reply body."""
    url = url.rstrip("/")
    try:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            token = _token(client, url, username, password)
            resp = client.patch(
                f"{url}/api/v2{hitl_path(run_id)}",
                headers={"Authorization": f"Bearer {token}"},
                json={"chosen_options": [option]},
            )
    except httpx.HTTPError as exc:
        raise ApprovalCallError(
            f"cannot reach Airflow at {url} ({exc.__class__.__name__}: {exc}). Is the stack up? "
            "For another stack pass --base-port/--state-dir before the command, or --url."
        ) from None
    if resp.status_code == 404:
        raise ApprovalCallError(
            f"run {run_id} has no approval request ({_detail(resp)}): was it triggered with "
            "approval=manual, and has it reached the approval step? (Only a challenger that "
            "passes the gate is put to a person.)"
        )
    if resp.status_code == 409:
        raise ApprovalCallError(f"run {run_id} was already answered: {_detail(resp)}")
    if not resp.is_success:
        raise ApprovalCallError(f"Airflow answered {resp.status_code}: {_detail(resp)}")
    body: dict[str, Any] = resp.json()
    return body
