"""What one consumer instance reports on ``/health/ready``; written by the loop, the sinks
and the rebalance listener, read by the HTTP app."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopStatus:
    """What ``/health/ready`` reports."""

    consumer_started: bool = False
    #: ``topic-partition`` names currently assigned to this instance.
    assigned: list[str] = field(default_factory=list)
    #: Sink name -> last error, while that sink's writes keep failing.
    failing_sinks: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None
