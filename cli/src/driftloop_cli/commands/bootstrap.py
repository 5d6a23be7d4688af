"""`driftloop bootstrap`: the first champion, via the training package."""

from __future__ import annotations

import os

from rich.console import Console

from ..settings import StackSettings


def run_bootstrap(s: StackSettings, *, force: bool, console: Console) -> int:
    from driftloop_training.bootstrap import bootstrap
    from driftloop_training.settings import TrainingSettings

    os.environ.setdefault("SCIKIT_LEARN_DATA", str(s.scikit_learn_data))
    training = TrainingSettings(
        mlflow_tracking_uri=f"http://127.0.0.1:{s.ports.mlflow}",
        kafka_bootstrap=f"127.0.0.1:{s.ports.kafka}",
        labelled_log_dir=s.state_dir / "labelled",
        work_dir=s.state_dir / "work",
    )
    result = bootstrap(training, force=force)
    console.print(result.message if hasattr(result, "message") else str(result))
    return 0
