"""Reading a run's reports back: the stats CSV in locust's format and the schedule log."""

from __future__ import annotations

import json
from pathlib import Path

from driftloop_loadtest.results import AGGREGATED, read_failures, read_schedule_log, read_stats

STATS = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time
POST,/feedback,20,0,2,2.1
POST,/predict,48,1,6,7.0
POST,/predict [invalid],9,0,2,8.0
,Aggregated,77,1,5,6.0
"""


def test_read_stats_keys_rows_by_name(tmp_path: Path) -> None:
    path = tmp_path / "locust_stats.csv"
    path.write_text(STATS)
    stats = read_stats(path)
    assert stats[AGGREGATED].requests == 77 and stats[AGGREGATED].failures == 1
    assert stats["/predict"].failures == 1
    assert stats["/predict [invalid]"].method == "POST"


def test_failures_and_schedule_log_are_empty_when_absent(tmp_path: Path) -> None:
    assert read_failures(tmp_path / "missing.csv") == []
    assert read_schedule_log(tmp_path / "missing.jsonl") == []


def test_read_schedule_log(tmp_path: Path) -> None:
    path = tmp_path / "schedule.jsonl"
    lines = [{"segment": "steady", "elapsed_s": 0.0}, {"segment": "sudden", "elapsed_s": 8.0}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert [x["segment"] for x in read_schedule_log(path)] == ["steady", "sudden"]
