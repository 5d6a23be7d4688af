"""ports.py: the port plan and the URLs built from it."""

from __future__ import annotations

from driftloop_contracts import HOST, PortPlan, StackUrls


def test_urls_follow_the_port_plan() -> None:
    plan = PortPlan(18000)
    urls = StackUrls(plan)
    assert urls.nginx == f"http://{HOST}:{plan.nginx}"
    assert urls.model_apis(2) == [f"http://{HOST}:18010", f"http://{HOST}:18011"]
    assert urls.drift_consumer == f"http://{HOST}:18020"
    assert urls.bridge == f"http://{HOST}:18030"
    assert urls.mlflow == f"http://{HOST}:18050"
    assert urls.airflow == f"http://{HOST}:18081"
    assert urls.influxdb == f"http://{HOST}:18086"
    assert urls.prometheus == f"http://{HOST}:18090"
    assert urls.alertmanager == f"http://{HOST}:18093"
    assert urls.redis == f"redis://{HOST}:18079/0"
    assert urls.kafka == f"{HOST}:18092"


def test_another_host() -> None:
    assert StackUrls(PortPlan(28000), host="10.0.0.5").http(28001) == "http://10.0.0.5:28001"
