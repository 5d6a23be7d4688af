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
        mlflow_tracking_uri=s.urls.mlflow,
        kafka_bootstrap=s.urls.kafka,
        labelled_log_dir=s.state_dir / "labelled",
        work_dir=s.state_dir / "work",
    )
    result = bootstrap(training, force=force)
    console.print(result.message)
    if force and result.created:
        # replicas and the drift consumer switch now instead of at their next alias check
        from driftloop_contracts import MODEL_NAME, ModelPromoted
        from driftloop_training.publisher import publish_model_promoted

        publish_model_promoted(
            training.kafka_bootstrap,
            ModelPromoted(
                model_name=MODEL_NAME,
                version=str(result.version),
                run_id=result.run_id,
                reason="driftloop bootstrap --force",
            ),
        )
        console.print(f"announced version {result.version} on model-events")
    return 0
