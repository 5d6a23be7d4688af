"""Four model API replicas behind nginx, on a real stack of their own (``DRIFTLOOP_REPLICAS=4``).

The session's stack runs two replicas; the scale-out claim of docs/scale-out.md ("add replicas
behind nginx") is proven here on four, started by the same code path (`driftloop up` through
``running_stack`` in tests/conftest.py) with only the replica count, the base port (the
session's + 1000) and the state directory changed, so it can run beside the session's stack.
nginx's upstream is generated from the replica count: a stack that generated fewer servers
fails the traffic-spread assertions below.

- A promotion (a new version registered in MLflow, the alias moved, ModelPromoted announced)
  under continuous traffic through nginx reaches all four replicas with 0 failed requests, and
  the traffic was spread over all four.
- One replica SIGKILLed under traffic through nginx costs 0 failed requests; every event the
  stack answered is on its topic or counted lost by the restarted replica (the accounting of
  test_model_api's kill test, reused); the supervisor restarts it and it serves the champion.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil
import pytest

from driftloop_cli import observe
from driftloop_cli.settings import REPO_ROOT, StackSettings
from driftloop_contracts import TEST_BASE_PORT

from .test_model_api import (
    RELOAD_DEADLINE_S,
    announce,
    background_load,
    kill_replica_under_load,
    metric_sum,
    new_champion,
    served_versions,
    wait_serving,
    wait_until,
)

pytestmark = pytest.mark.integration

REPLICAS = 4
#: This stack's base port is the session stack's + this, so the two never share a port.
BASE_PORT_OFFSET = 1000
#: Inside the session's state directory (ignored by git, and `scripts/test.sh` looks for
#: leftover processes of both under it), a directory of its own.
STATE_DIR = REPO_ROOT / ".driftloop-test" / f"replicas-{REPLICAS}"
#: Seconds for its programs to report healthy (`driftloop up`'s default is 240 for a lone stack).
UP_TIMEOUT_S = 360.0


def processes_naming(state_dir: Path) -> list[str]:
    """Processes whose command line or environment names ``state_dir`` (the stack's programs
    name it in one or the other; a replica only in its environment)."""
    needle = str(state_dir)
    found: list[str] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or ())
            if needle in cmd or any(needle in v for v in proc.environ().values()):
                found.append(f"{proc.pid} {cmd[:160]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(scope="module")
def four(start_stack: Callable[[StackSettings], AbstractContextManager[Any]]) -> Iterator[Any]:
    """The 4-replica stack with a champion every replica serves; stopped afterwards, and no
    process of it may outlive `down` (a restarted replica included, whose pid the stack's start
    did not see)."""
    from driftloop_training.bootstrap import bootstrap

    s = StackSettings(
        base_port=int(os.environ.get("DRIFTLOOP_TEST_BASE_PORT", TEST_BASE_PORT))
        + BASE_PORT_OFFSET,
        state_dir=STATE_DIR,
        replicas=REPLICAS,
    ).resolved()
    # It starts beside the session's stack (in a whole run), on the same cores: allow it more
    # than a lone stack's default (DRIFTLOOP_UP_TIMEOUT_S still raises it further).
    s = s.model_copy(update={"up_timeout_s": max(s.up_timeout_s, UP_TIMEOUT_S)})
    started = time.monotonic()
    with start_stack(s) as stack:
        assert len(stack.model_api_urls) == REPLICAS
        result = bootstrap(stack.training_settings())
        # The replicas also find it by their periodic alias check; the event saves the wait.
        announce(stack, result.version, result.run_id, "four-replica stack: first champion")
        wait_serving(stack)
        print(f"4-replica stack up and serving in {time.monotonic() - started:.0f}s")
        yield stack
    if not os.environ.get("DRIFTLOOP_TEST_KEEP_STACK"):
        wait_until(lambda: not processes_naming(s.state_dir), 30, "every process of it to exit")


def predictions_answered(stack: Any) -> list[float]:
    """``/predict`` requests each replica answered 200 so far (its own counter)."""
    return [
        metric_sum([url], "driftloop_http_requests_total", route="/predict", status="200")
        for url in stack.model_api_urls
    ]


def test_promotion_under_load_reaches_all_four_replicas_with_no_failed_request(
    four: Any,
) -> None:
    """A new champion announced while requests stream through nginx: every one of the four
    replicas serves it within seconds, no request fails, and each replica answered a share of
    the traffic (the replicas' own counters add up to exactly the requests answered, so every
    answer came from one of these four)."""
    stack = four
    urls = stack.model_api_urls
    versions = set(served_versions(urls))
    assert len(versions) == 1 and None not in versions, versions
    (old,) = versions
    before = predictions_answered(stack)
    with background_load(stack.nginx_url, concurrency=4) as load:
        version = new_champion(stack, 404)  # returns once ModelPromoted is announced
        took = wait_until(
            lambda: set(served_versions(urls)) == {version},
            RELOAD_DEADLINE_S,
            f"all {REPLICAS} replicas on version {version}",
        )
    assert load.failed == 0, load.errors[:5]
    assert version in load.versions and old in load.versions, load.versions
    answered = load.statuses.get(200, 0)

    def shares() -> list[float]:
        return [a - b for a, b in zip(predictions_answered(stack), before, strict=True)]

    # A replica counts a request once its response is sent: poll the sum briefly.
    wait_until(lambda: sum(shares()) == answered, 10, "the replicas' counts to add up")
    per_replica = shares()
    print(
        f"promotion on {REPLICAS} replicas: {load.total} requests, {load.failed} failed, "
        f"per replica {[int(n) for n in per_replica]}, versions {load.versions}; "
        f"version {version} on all {REPLICAS} {took:.1f}s after ModelPromoted"
    )
    assert all(n > 0 for n in per_replica), f"a replica served nothing: {per_replica}"


def test_replica_sigkilled_under_load_fails_no_request_and_restarts_on_the_champion(
    four: Any,
) -> None:
    """One of the four SIGKILLed while predictions and their feedback stream through nginx:
    nginx retries what it did not answer on the other three, so none fails; answered -
    consumed - counted lost == 0 per topic (kill_replica_under_load, test_model_api.py); the
    survivors each answered a share; the supervisor restarts the killed one and it serves the
    champion again."""
    from driftloop_training import registry

    stack = four
    urls = stack.model_api_urls
    # No post-promotion watch on this stack (why it matters: test_model_api's ``no_watch``).
    assert all(shadow is None for _, shadow in observe.replica_watch_states(urls))
    victim = 2
    before = predictions_answered(stack)
    figures = kill_replica_under_load(stack, victim, "SIGKILL")
    after = predictions_answered(stack)
    survivors = {i: after[i] - before[i] for i in range(REPLICAS) if i != victim}
    print(
        f"SIGKILL of replica {victim} of {REPLICAS}: (answered, consumed, counted lost) per "
        f"topic {figures}; answered by each survivor {survivors}"
    )
    assert all(n > 0 for n in survivors.values()), survivors

    def champion() -> str | None:
        current = registry.get_champion(stack.mlflow_url)
        return current.version if current else None

    wait_until(
        lambda: served_versions(urls) == [champion()] * REPLICAS,
        120,
        f"all {REPLICAS} replicas, the restarted one included, on the champion",
    )
