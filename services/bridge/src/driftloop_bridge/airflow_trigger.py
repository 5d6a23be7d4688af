"""Create DAG runs through Airflow's REST API v2 with apache-airflow-client (3.3).

* Auth: a JWT from ``POST <airflow>/auth/token`` with the configured user; cached until
  shortly before its ``exp`` claim, and fetched again when Airflow refuses it (Airflow 3.3
  answers an invalid or expired token with 403 "Invalid JWT token", so both 401 and 403 cause
  one refresh-and-retry).
* Trigger: ``DagRunApi.trigger_dag_run(dag_id, TriggerDAGRunPostBody(dag_run_id, conf))``
  with the deterministic run id; 409 (``ConflictException``) means the run already exists,
  which is the idempotent success case.
* Active runs: ``DagRunApi.get_dag_runs(dag_id, state=["queued", "running"])``; the retry
  queue asks before every trigger, so a second run is never requested while one is active
  (one retrain per incident; see :mod:`retry_queue`).
* Failures are classified for the retry queue: connection errors, timeouts, 5xx, token
  trouble and 404 (the DAG may not be parsed yet) are :class:`TriggerUnavailable`; 400/422
  (the request itself is wrong) are :class:`TriggerRejected`.

The generated client is synchronous (urllib3), so calls run in a worker thread; urllib3's own
retries are off because the durable queue owns retrying.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
import urllib3
from airflow_client.client import ApiClient, Configuration
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.exceptions import (
    ApiException,
    BadRequestException,
    ConflictException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
    UnprocessableEntityException,
)
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody
from pydantic import SecretStr

from .errors import TriggerRejected, TriggerUnavailable
from .metrics import BridgeMetrics
from .retry_queue import TriggerResult
from .store import Clock

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Airflow 3's DagRunState values of a run that has not ended (``max_active_runs=1`` keeps a
#: second triggered run ``queued`` behind the running one: both count).
ACTIVE_STATES = ("queued", "running")
#: How many active runs one check lists (one is enough to decide; a few help the audit line).
ACTIVE_RUNS_LIMIT = 5

#: Refresh the token this long before it expires, so a call never races its expiry.
TOKEN_MARGIN_SECONDS = 60.0
#: Used when a token carries no readable ``exp`` (Airflow's default lifetime is 24 h).
FALLBACK_TOKEN_LIFETIME_SECONDS = 300.0


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (not verified: Airflow verifies it, we only plan refreshes)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
    except (IndexError, ValueError, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


def _detail(exc: ApiException) -> str:
    body = exc.body or ""
    try:
        detail = json.loads(body).get("detail", body)
    except (ValueError, AttributeError):
        detail = body
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return text[:300]


class AirflowTrigger:
    """Creates DAG runs; one instance per bridge process (thread-safe)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: SecretStr,
        *,
        default_timeout: float = 10.0,
        clock: Clock = time.time,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self._metrics = metrics or BridgeMetrics()
        self._base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._timeout = default_timeout
        self._clock = clock
        self._http = urllib3.PoolManager(retries=False)
        self._api_client = ApiClient(Configuration(host=self._base_url, retries=False))
        self._dag_runs = DagRunApi(self._api_client)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    async def trigger(
        self,
        dag_id: str,
        dag_run_id: str,
        conf: dict[str, Any],
        *,
        call_timeout: float | None = None,
    ) -> TriggerResult:
        return await asyncio.to_thread(
            self.trigger_sync, dag_id, dag_run_id, conf, call_timeout or self._timeout
        )

    async def active_runs(self, dag_id: str, *, call_timeout: float | None = None) -> list[str]:
        return await asyncio.to_thread(self.active_runs_sync, dag_id, call_timeout or self._timeout)

    def close(self) -> None:
        self._http.clear()
        # The generated ApiClient has no close(); its connections live in the REST client's pool.
        self._api_client.rest_client.pool_manager.clear()

    # --- token -----------------------------------------------------------------------------
    def _current_token(self, timeout: float) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._token_expires - TOKEN_MARGIN_SECONDS:
                self._token = self._fetch_token(timeout)
                expires = token_expiry(self._token)
                self._token_expires = (
                    expires
                    if expires is not None
                    else self._clock() + FALLBACK_TOKEN_LIFETIME_SECONDS
                )
            return self._token

    def _invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch_token(self, timeout: float) -> str:
        url = f"{self._base_url}/auth/token"
        started = time.perf_counter()
        try:
            resp = self._http.request(
                "POST",
                url,
                json={"username": self._username, "password": self._password.get_secret_value()},
                timeout=urllib3.Timeout(total=timeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise TriggerUnavailable(f"Airflow unreachable at {url}: {exc}") from None
        finally:
            self._metrics.airflow_call_seconds.observe(time.perf_counter() - started)
        if resp.status >= 500:
            raise TriggerUnavailable(f"Airflow token endpoint answered {resp.status}", resp.status)
        if resp.status not in (200, 201):
            # Wrong credentials are an operator error, but fixing them needs no new alert:
            # keep retrying (visible in logs and metrics) until max age dead-letters it.
            raise TriggerUnavailable(
                f"Airflow refused a token for user {self._username!r} ({resp.status})",
                resp.status,
            )
        try:
            token = json.loads(resp.data)["access_token"]
        except (ValueError, KeyError, TypeError):
            raise TriggerUnavailable(
                "Airflow token endpoint answered without access_token"
            ) from None
        log.info("airflow_token_refreshed", user=self._username)
        return str(token)

    # --- calls ---------------------------------------------------------------------------
    def _call(
        self, what: str, dag_id: str, call: Callable[[dict[str, str]], T], timeout: float
    ) -> T:
        """``call(headers)`` with a current token; one refresh-and-retry on 401/403, and every
        failure classified (see the module docstring). 409 is left to the caller."""
        for attempt in (1, 2):
            token = self._current_token(timeout)
            started = time.perf_counter()
            try:
                return call({"Authorization": f"Bearer {token}"})
            except (UnauthorizedException, ForbiddenException) as exc:
                self._invalidate()
                if attempt == 1:
                    continue
                raise TriggerUnavailable(
                    f"Airflow refused the token ({exc.status}): {_detail(exc)}", exc.status
                ) from None
            except NotFoundException as exc:
                raise TriggerUnavailable(
                    f"DAG {dag_id!r} not found (not parsed yet?): {_detail(exc)}", 404
                ) from None
            except (BadRequestException, UnprocessableEntityException) as exc:
                raise TriggerRejected(
                    f"Airflow answered {exc.status} to {what}: {_detail(exc)}", exc.status
                ) from None
            except ConflictException:
                raise
            except ApiException as exc:
                raise TriggerUnavailable(
                    f"Airflow answered {exc.status} to {what}: {_detail(exc)}", exc.status
                ) from None
            except urllib3.exceptions.HTTPError as exc:
                raise TriggerUnavailable(f"Airflow unreachable ({what}): {exc}") from None
            finally:
                self._metrics.airflow_call_seconds.observe(time.perf_counter() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    def trigger_sync(
        self, dag_id: str, dag_run_id: str, conf: dict[str, Any], timeout: float
    ) -> TriggerResult:
        body = TriggerDAGRunPostBody(dag_run_id=dag_run_id, conf=conf)
        try:
            run = self._call(
                "the trigger",
                dag_id,
                lambda headers: self._dag_runs.trigger_dag_run(
                    dag_id, body, _request_timeout=timeout, _headers=headers
                ),
                timeout,
            )
        except ConflictException:
            return TriggerResult("exists")
        state = getattr(run.state, "value", run.state)
        return TriggerResult("created", str(state) if state is not None else None)

    def active_runs_sync(self, dag_id: str, timeout: float) -> list[str]:
        """Ids of the DAG's runs that are queued or running, oldest first.

        A 400/422 here is our request's fault, not the trigger's: it is reported as
        :class:`TriggerUnavailable` (retried) rather than dead-lettering the trigger.
        """
        try:
            page = self._call(
                "the active-run check",
                dag_id,
                lambda headers: self._dag_runs.get_dag_runs(
                    dag_id,
                    state=list(ACTIVE_STATES),
                    order_by=["run_after"],
                    limit=ACTIVE_RUNS_LIMIT,
                    _request_timeout=timeout,
                    _headers=headers,
                ),
                timeout,
            )
        except TriggerRejected as exc:
            raise TriggerUnavailable(exc.message, exc.status) from None
        return [str(run.dag_run_id) for run in page.dag_runs]
