"""The service skeleton every driftloop service shares, written once.

* :mod:`.retry` — the one retry policy (tenacity ``AsyncRetrying``, stop-aware, counted).
* :mod:`.subscriber` — the one ``model-events`` subscriber (with log-reset handling).
* :mod:`.dead_letters` — the one dead-letter publisher (``<topic>.dlq``, acked or counted).
* :mod:`.http_errors` — the one error body ``{error, message, detail: [{field, rule, message}]}``.
* :mod:`.health` — ``/health/live`` and ``/health/ready`` with one vocabulary.
* :mod:`.metrics` — per-instance Prometheus registries, ``/metrics``, the retry counter.
* :mod:`.server` — settings-or-exit, uvicorn with the shutdown grace from settings.
* :mod:`.memory` — hand freed memory back to the kernel; keep long-lived objects out of the GC.
* :mod:`.single_write` — uvicorn's httptools protocol sending each response in one write.
"""

from .dead_letters import (
    DeadLetterOutcome,
    DeadLetterProducer,
    DeadLetterPublisher,
    dead_letter_producer_factory,
)
from .health import LiveBody, Readiness, ReadyBody, health_router
from .http_errors import (
    BODY,
    ApiError,
    ErrorBody,
    FieldProblem,
    ProblemDetail,
    error_body,
    error_response,
    install_error_handlers,
    invalid_input_response,
    problems_from_errors,
    validation_problems,
)
from .memory import release_freed_memory, settle_heap
from .metrics import RetryCounter, metrics_router, new_registry
from .retry import Backoff, RetryHook, RetryStopped, retrying, wait_or_stop
from .server import serve, settings_or_exit, stop_tasks
from .subscriber import ModelEventsConsumer, ModelEventsSubscriber, model_events_consumer_factory

__all__ = [
    "BODY",
    "ApiError",
    "Backoff",
    "DeadLetterOutcome",
    "DeadLetterProducer",
    "DeadLetterPublisher",
    "ErrorBody",
    "FieldProblem",
    "LiveBody",
    "ModelEventsConsumer",
    "ModelEventsSubscriber",
    "ProblemDetail",
    "Readiness",
    "ReadyBody",
    "RetryCounter",
    "RetryHook",
    "RetryStopped",
    "dead_letter_producer_factory",
    "error_body",
    "error_response",
    "health_router",
    "install_error_handlers",
    "invalid_input_response",
    "metrics_router",
    "model_events_consumer_factory",
    "new_registry",
    "problems_from_errors",
    "release_freed_memory",
    "retrying",
    "serve",
    "settings_or_exit",
    "settle_heap",
    "stop_tasks",
    "validation_problems",
    "wait_or_stop",
]
