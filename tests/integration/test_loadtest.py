"""The load test against the real stack: locust headless through nginx, steady then sudden drift.

Proves that the users' requests are what the API accepts (0 unexpected failures, the planned
invalid bodies each get a 422 naming the field), that nginx spreads them over every replica,
and that the scenario switch happens on schedule. Needs the model API service; the stack and
champion come from the session fixtures in tests/conftest.py (base port 28000).
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from driftloop_cli.observe import metric_total, scrape_metrics
from driftloop_cli.settings import REPO_ROOT
from driftloop_contracts import API_KEY_HEADER, EXAMPLE_FEATURES, FeedbackApiKeySettings
from driftloop_loadtest.command import locust_command, report_paths
from driftloop_loadtest.results import AGGREGATED, read_failures, read_schedule_log, read_stats
from driftloop_loadtest.scenarios import (
    BAD_FEEDBACK_CASES,
    BAD_PREDICT_CASES,
    bad_feedback,
    bad_predict,
)

pytestmark = pytest.mark.integration

if importlib.util.find_spec("driftloop_model_api.__main__") is None:
    pytest.skip("driftloop_model_api has no __main__ yet", allow_module_level=True)


PRODUCER_KEY = FeedbackApiKeySettings().producer_key
RUN_TIME_S = 20
STEADY_S = 8


def wait_serving(stack, timeout_s: float = 120.0) -> None:
    """Poll until every replica has a model and nginx answers a prediction."""
    deadline = time.monotonic() + timeout_s
    last = ""
    with httpx.Client(timeout=5) as client:
        while True:
            try:
                ready = [client.get(f"{u}/health/ready").status_code for u in stack.model_api_urls]
                answer = client.post(f"{stack.nginx_url}/predict", json=EXAMPLE_FEATURES)
                if all(code == 200 for code in ready) and answer.status_code == 200:
                    return
                last = f"replicas ready {ready}, nginx /predict {answer.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(f"model API not serving within {timeout_s}s: {last}")
            time.sleep(0.5)


def predict_counts(urls: list[str]) -> dict[str, float]:
    """``driftloop_http_requests_total{route="/predict"}`` summed over statuses, per replica."""
    return {
        url: metric_total(scrape_metrics([url]), "driftloop_http_requests_total", route="/predict")
        for url in urls
    }


def test_every_planned_bad_request_gets_a_422_naming_the_field(stack, champion) -> None:
    wait_serving(stack)
    rng = random.Random(8)
    bads = [bad_predict(rng, EXAMPLE_FEATURES, c) for c in BAD_PREDICT_CASES for _ in range(3)]
    bads += [bad_feedback(c) for c in BAD_FEEDBACK_CASES]
    # As a label producer: a bad feedback body must reach the body check, not stop at the key.
    headers = {"Content-Type": "application/json", API_KEY_HEADER: PRODUCER_KEY}
    with httpx.Client(base_url=stack.nginx_url, timeout=10) as client:
        for bad in bads:
            resp = client.post(bad.route, content=bad.body, headers=headers)
            assert resp.status_code == 422, (bad.case, resp.status_code, resp.text)
            assert bad.field in resp.json()["message"], (bad.case, resp.text)


def test_locust_steady_then_sudden_through_nginx_has_no_failures(
    stack, champion, tmp_path: Path
) -> None:
    wait_serving(stack)
    before = predict_counts(stack.model_api_urls)
    report_dir = tmp_path / "locust"
    argv = locust_command(
        host=stack.nginx_url,
        users=4,
        spawn_rate=4,
        run_time_s=RUN_TIME_S,
        schedule=f"steady:{STEADY_S},sudden",
        report_dir=report_dir,
        feedback_share=0.5,
        feedback_delay_s=1.0,
        bad_share=0.05,
    )
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    result = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIME_S + 120,
        check=False,
    )
    log = (result.stdout[-4000:] + result.stderr[-4000:]).strip()
    paths = report_paths(report_dir)
    assert paths.stats_csv.is_file(), log
    stats = read_stats(paths.stats_csv)

    assert stats[AGGREGATED].failures == 0, read_failures(paths.failures_csv)
    assert result.returncode == 0, log
    assert stats["/predict"].requests >= 50, stats
    assert stats["/feedback"].requests > 0, stats
    invalid = sum(s.requests for name, s in stats.items() if name.endswith("[invalid]"))
    assert invalid > 0, stats
    assert paths.html.is_file()

    switches = read_schedule_log(paths.schedule_log)
    assert [s["segment"] for s in switches] == ["steady", "sudden"], switches
    assert switches[1]["elapsed_s"] == STEADY_S, switches  # the schedule's switch time
    assert switches[1]["logged_elapsed_s"] >= STEADY_S, switches  # announced once it happened

    after = predict_counts(stack.model_api_urls)
    served = {url: after[url] - before[url] for url in stack.model_api_urls}
    assert all(n > 0 for n in served.values()), f"nginx must spread the load: {served}"
    assert sum(served.values()) >= stats["/predict"].requests, served
