"""The first champion: train on the California housing data, register it, set the alias.

Idempotent: with a champion already registered and ``force=False`` it changes nothing and
says so, which makes it safe to call from ``driftloop bootstrap``, test fixtures and set-up
scripts alike. ``force=True`` trains a fresh version and moves the alias to it.

Migration: a champion without the artifact digest tag was logged by an earlier driftloop
(pickle, no digest) and no loader accepts it any more, so it counts as no champion: plain
``driftloop bootstrap`` trains a skops replacement and moves the alias (the old version stays
in the registry, unserved). The replicas' refusal message points here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from driftloop_contracts import MODEL_NAME
from driftloop_contracts.model_artifact import ARTIFACT_DIGEST_TAG

from . import registry
from .data import load_base_data, split_base
from .evaluate import Scores, score_model
from .profile import compute_profile
from .settings import TrainingSettings
from .train import ModelParams, features_of, fit_model, predict_usd

log = logging.getLogger(__name__)

#: Version tag with the number of base rows a bootstrap model trained on (tests and demos
#: register small ones with ``sample_rows``; this tells the full model apart).
TAG_TRAIN_ROWS = "driftloop.train_rows"


@dataclass(frozen=True)
class BootstrapResult:
    created: bool
    version: str
    run_id: str
    message: str
    scores: Scores | None = None
    profile_id: str | None = None


def bootstrap(
    settings: TrainingSettings,
    force: bool = False,
    *,
    sample_rows: int | None = None,
    params: ModelParams | None = None,
) -> BootstrapResult:
    """Train and register the first champion unless one exists (or ``force``).

    ``sample_rows`` trains on a subsample of the base training split (tests use it for speed);
    the holdout is always the full base holdout, so the reported scores stay comparable.
    """
    uri = settings.mlflow_tracking_uri
    current = registry.get_champion(uri)
    legacy = current is not None and not current.tags.get(ARTIFACT_DIGEST_TAG)
    if legacy:
        log.warning(
            "champion version %s predates skops artifacts (no digest): training a replacement",
            current.version if current else "",
        )
    if current is not None and not force and not legacy:
        return BootstrapResult(
            created=False,
            version=current.version,
            run_id=current.run_id,
            message=(
                f"champion already registered: {MODEL_NAME} version {current.version} "
                "(nothing to do; use --force to train a new one)"
            ),
        )

    base = load_base_data(download_if_missing=settings.download_if_missing)
    train, holdout = split_base(base, holdout_share=settings.base_holdout_share, seed=settings.seed)
    if sample_rows is not None and sample_rows < len(train):
        train = train.sample(n=sample_rows, random_state=settings.seed).reset_index(drop=True)
    model_params = params or ModelParams(random_state=settings.seed)
    model = fit_model(train, params=model_params)
    scores = score_model(model, holdout)
    profile = compute_profile(features_of(train), predict_usd(model, train))
    log.info("bootstrap model scored %s on %d holdout rows", scores, scores.n)

    logged = registry.log_model_run(
        uri,
        model=model,
        features=features_of(train),
        profile=profile,
        run_name="bootstrap",
        params={
            **{f"model.{k}": v for k, v in model_params.as_dict().items()},
            "data.source": "sklearn.fetch_california_housing",
            "data.train_rows": len(train),
            "data.holdout_rows": len(holdout),
            "data.holdout_share": settings.base_holdout_share,
            "data.seed": settings.seed,
        },
        metrics={**scores.holdout_metrics(), "train_rows": float(len(train))},
        tags={registry.TAG_ROLE: "bootstrap", "driftloop.profile_id": profile.profile_id},
    )
    version = registry.register_version(
        uri,
        run_id=logged.run_id,
        model_uri=logged.model_uri,
        tags={
            registry.TAG_DECISION: "bootstrap",
            "driftloop.holdout_rmse_usd": f"{scores.rmse_usd:.2f}",
            "driftloop.profile_id": profile.profile_id,
            TAG_TRAIN_ROWS: str(len(train)),
        },
    )
    registry.set_champion(uri, version.version)
    replaced = ""
    if current is not None:
        why = ", a pre-skops model no longer loaded" if legacy else ""
        replaced = f" (replacing version {current.version}{why})"
    return BootstrapResult(
        created=True,
        version=version.version,
        run_id=logged.run_id,
        message=(
            f"registered {MODEL_NAME} version {version.version} as champion{replaced}: "
            f"holdout RMSE {scores.rmse_usd:,.0f} USD, MAE {scores.mae_usd:,.0f} USD, "
            f"R² {scores.r2:.3f}"
        ),
        scores=scores,
        profile_id=profile.profile_id,
    )


def full_bootstrap_version(settings: TrainingSettings) -> str:
    """A version trained by a full bootstrap (the whole base training split), registered if
    none is; the ``champion`` alias is left where it was.

    Why: after retrains, and after tests that register small models with ``sample_rows``, the
    champion may no longer describe the base data; a scenario drawn from the base data (the
    demos' steady traffic, the DAG tests' figures) needs the model that does. Found by its tags.
    """
    uri = settings.mlflow_tracking_uri
    base = load_base_data(download_if_missing=settings.download_if_missing)
    train, _ = split_base(base, holdout_share=settings.base_holdout_share, seed=settings.seed)
    found = registry.search_versions(
        uri, {registry.TAG_DECISION: "bootstrap", TAG_TRAIN_ROWS: str(len(train))}
    )
    if found:
        return found[0].version
    before = registry.get_champion(uri)
    result = bootstrap(settings, force=True)
    if before is not None:
        registry.set_champion(uri, before.version)
    return result.version
