"""What a model artifact must be for driftloop to load it, and the one loader that checks it.

Whoever can write to MLflow (its registry or its artifact store) chooses what every replica and
every DAG run deserialises, so loading is where trust is enforced, not where it is assumed:

* **skops only.** Models are logged with MLflow's sklearn flavour in the ``skops`` format and
  read back with :func:`skops.io.load` and *our* :data:`SKOPS_TRUSTED_TYPES`, never with
  pickle, cloudpickle or a pyfunc fallback. MLflow's own ``mlflow.sklearn.load_model`` is not
  used to load: it reads the serialisation format *and* the trusted-types list from the
  artifact's ``MLmodel`` file (so a crafted artifact whitelists itself or switches to
  pickle) and puts the artifact's ``code/`` directory on ``sys.path``. Here only the
  ``model.skops`` file is opened, and only with the list defined below.
* **digest.** At registration the training package records :func:`artifact_digest` of the
  model's files as the version tag :data:`ARTIFACT_DIGEST_TAG`; :func:`load_verified` refuses a
  download whose digest differs. :data:`SKOPS_TRUSTED_TYPES` has to name scikit-learn's
  ``TreePredictor`` (the fitted trees of HistGradientBoosting), whose node indices
  scikit-learn does not bounds-check, so a *well-typed* but tampered file could still crash a
  replica; the digest is what ties the bytes loaded to the bytes the trainer wrote.

Refusals are :class:`ModelRejected` with a ``reason`` (a Prometheus label value)::

    ModelRejected               the artifact is not one driftloop will deserialise
     ├── UntrustedArtifact      it needs a type outside SKOPS_TRUSTED_TYPES (names them)
     ├── LegacyPickleArtifact   logged with pickle/cloudpickle by an earlier driftloop
     ├── DigestMissing          the version has no recorded digest (not registered by us)
     └── DigestMismatch         the files differ from what was registered

skops is imported on first use: only the packages that load models (model API, training,
benchmarks) depend on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = [
    "ARTIFACT_DIGEST_TAG",
    "LEGACY_PICKLE_FILE",
    "MODEL_DATA_FILE",
    "SERIALIZATION_FORMAT",
    "SKOPS_TRUSTED_TYPES",
    "DigestMismatch",
    "DigestMissing",
    "LegacyPickleArtifact",
    "ModelRejected",
    "UntrustedArtifact",
    "artifact_digest",
    "load_verified",
    "untrusted_types",
    "verify_digest",
]

#: The serialisation format every driftloop model is logged in (MLflow's sklearn flavour).
SERIALIZATION_FORMAT = "skops"
#: File of the fitted estimator inside the model artifact directory (MLflow's name for skops).
MODEL_DATA_FILE = "model.skops"
#: What MLflow names the file when a model was logged with pickle or cloudpickle.
LEGACY_PICKLE_FILE = "model.pkl"
#: The types, beyond skops' own safe defaults (scikit-learn estimators, numpy, builtins), that
#: our pipeline (``Pipeline`` + ``HistGradientBoostingRegressor``) needs. Found with
#: ``skops.io.get_untrusted_types`` on a fitted pipeline; adding a step with another type
#: means adding it here, after reading why skops does not trust it by default.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
#: Model-version (and training-run) tag with the sha256 of the model artifact's files.
ARTIFACT_DIGEST_TAG = "driftloop.artifact_sha256"

_CHUNK = 1 << 20
#: Written by MLflow's client into every download of a ``models:/`` URI (the name and version
#: it was fetched as), so it differs between the logged and the registered URI of the same
#: model; it is not in the store and nothing here reads it.
_DOWNLOAD_METADATA = frozenset({"registered_model_meta"})


class ModelRejected(Exception):
    """The artifact is not one driftloop will deserialise; ``reason`` labels the counter."""

    reason = "rejected"


class UntrustedArtifact(ModelRejected):
    """The skops file needs types outside :data:`SKOPS_TRUSTED_TYPES`."""

    reason = "untrusted_type"

    def __init__(self, types: list[str], where: str) -> None:
        self.types = types
        super().__init__(
            f"{where} needs untrusted types {types}: refused (trusted beyond skops' defaults: "
            f"{list(SKOPS_TRUSTED_TYPES)}, driftloop_contracts.model_artifact)"
        )


class LegacyPickleArtifact(ModelRejected):
    """The model was logged with pickle/cloudpickle, which driftloop no longer loads."""

    reason = "legacy_format"

    def __init__(self, where: str) -> None:
        super().__init__(
            f"{where} was logged with pickle by an earlier driftloop and is not loaded any more: "
            "run `driftloop bootstrap` to train and promote a skops champion in its place "
            "(see docs/security.md, 'Model artifacts')"
        )


class DigestMissing(ModelRejected):
    """The version carries no :data:`ARTIFACT_DIGEST_TAG`, so its bytes cannot be checked."""

    reason = "digest_missing"

    def __init__(self, where: str) -> None:
        super().__init__(
            f"{where} has no {ARTIFACT_DIGEST_TAG} tag: it was not registered by driftloop's "
            "training package, refused (run `driftloop bootstrap` for a new champion)"
        )


class DigestMismatch(ModelRejected):
    """The downloaded files are not the ones whose digest was recorded at registration."""

    reason = "digest_mismatch"

    def __init__(self, where: str, expected: str, actual: str) -> None:
        self.expected, self.actual = expected, actual
        super().__init__(
            f"{where}: artifact digest {actual} differs from the registered {expected} "
            "(the artifact store was changed after registration): refused"
        )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_digest(model_dir: Path) -> str:
    """sha256 over every file of a model artifact directory (path and content, sorted).

    Covers all files, not just ``model.skops``: an added ``code/`` directory or an edited
    ``MLmodel`` changes it too. Directories themselves (empty ones included) do not count,
    since a download creates them as needed, and neither does MLflow's download metadata.
    """
    root = Path(model_dir)
    lines = sorted(
        f"{path.relative_to(root).as_posix()}\0{_file_sha256(path)}\n"
        for path in root.rglob("*")
        if path.is_file() and path.relative_to(root).as_posix() not in _DOWNLOAD_METADATA
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def verify_digest(model_dir: Path, expected: str | None, *, where: str) -> str:
    """The directory's digest, if it equals ``expected``; else :class:`DigestMissing` /
    :class:`DigestMismatch`."""
    if not expected:
        raise DigestMissing(where)
    actual = artifact_digest(model_dir)
    if actual != expected:
        raise DigestMismatch(where, expected, actual)
    return actual


def untrusted_types(model_file: Path) -> list[str]:
    """Types in a skops file outside skops' defaults and :data:`SKOPS_TRUSTED_TYPES`."""
    import skops.io

    return [
        t for t in skops.io.get_untrusted_types(file=model_file) if t not in SKOPS_TRUSTED_TYPES
    ]


def load_verified(model_dir: Path, expected_digest: str | None, *, where: str) -> Any:
    """The estimator of a downloaded model artifact, after every check above.

    ``where`` names the artifact in errors (``"california-housing version 3"``). Order: which
    files exist (a pre-skops model gets the migration message, not a digest error), then the
    digest (nothing of a changed artifact is parsed), then the types the skops file needs.
    """
    root = Path(model_dir)
    model_file = root / MODEL_DATA_FILE
    if not model_file.is_file():
        if (root / LEGACY_PICKLE_FILE).is_file():
            raise LegacyPickleArtifact(where)
        raise ModelRejected(f"{where} has no {MODEL_DATA_FILE}: not a skops model, refused")
    verify_digest(root, expected_digest, where=where)
    extra = untrusted_types(model_file)
    if extra:
        raise UntrustedArtifact(extra, where)
    import skops.io

    return skops.io.load(model_file, trusted=list(SKOPS_TRUSTED_TYPES))
