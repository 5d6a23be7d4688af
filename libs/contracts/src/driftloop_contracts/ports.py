"""The local stack's port plan: every component's port derived from one base port.

The user's stack defaults to base 18000 and the test suite's stack to 28000, so a running
demo and a test run never collide. Inside Docker the containers use the images' own ports;
docker-compose.yml publishes them on the host at PortPlan(DOCKER_BASE_PORT), so a Docker stack
collides with neither.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_PORT = 18000
TEST_BASE_PORT = 28000
#: docker-compose.yml publishes the services on PortPlan(DOCKER_BASE_PORT) (see .env.example).
DOCKER_BASE_PORT = 38000
HOST = "127.0.0.1"


@dataclass(frozen=True)
class PortPlan:
    base: int = DEFAULT_BASE_PORT

    @property
    def nginx(self) -> int:
        return self.base

    @property
    def supervisor(self) -> int:
        return self.base + 1

    def model_api(self, replica: int) -> int:
        return self.base + 10 + replica

    @property
    def drift_consumer(self) -> int:
        return self.base + 20

    @property
    def bridge(self) -> int:
        return self.base + 30

    @property
    def mlflow(self) -> int:
        return self.base + 50

    @property
    def redis(self) -> int:
        return self.base + 79

    @property
    def airflow(self) -> int:
        return self.base + 81

    @property
    def influxdb(self) -> int:
        return self.base + 86

    @property
    def influxdb_rpc(self) -> int:
        return self.base + 88

    @property
    def prometheus(self) -> int:
        return self.base + 90

    @property
    def kafka(self) -> int:
        return self.base + 92

    @property
    def alertmanager(self) -> int:
        return self.base + 93


@dataclass(frozen=True)
class StackUrls:
    """Where a client reaches each component of the stack on ``ports``: the one place a URL is
    built from a port, so the CLI, the demo, the benches and the tests cannot disagree.

    Example::

        urls = StackUrls(PortPlan(18000))
        urls.prometheus        # "http://127.0.0.1:18090"
        urls.model_apis(2)     # ["http://127.0.0.1:18010", "http://127.0.0.1:18011"]
        urls.redis             # "redis://127.0.0.1:18079/0"
        urls.kafka             # "127.0.0.1:18092" (bootstrap servers, no scheme)
    """

    ports: PortPlan
    host: str = HOST

    def http(self, port: int) -> str:
        """``http://host:port`` for any port (a component's, or one a bench picked)."""
        return f"http://{self.host}:{port}"

    @property
    def nginx(self) -> str:
        return self.http(self.ports.nginx)

    def model_api(self, replica: int) -> str:
        return self.http(self.ports.model_api(replica))

    def model_apis(self, replicas: int) -> list[str]:
        return [self.model_api(i) for i in range(replicas)]

    @property
    def drift_consumer(self) -> str:
        return self.http(self.ports.drift_consumer)

    @property
    def bridge(self) -> str:
        return self.http(self.ports.bridge)

    @property
    def mlflow(self) -> str:
        return self.http(self.ports.mlflow)

    @property
    def airflow(self) -> str:
        return self.http(self.ports.airflow)

    @property
    def influxdb(self) -> str:
        return self.http(self.ports.influxdb)

    @property
    def prometheus(self) -> str:
        return self.http(self.ports.prometheus)

    @property
    def alertmanager(self) -> str:
        return self.http(self.ports.alertmanager)

    @property
    def redis(self) -> str:
        """Database 0, the one every component uses."""
        return f"redis://{self.host}:{self.ports.redis}/0"

    @property
    def kafka(self) -> str:
        """Bootstrap servers as aiokafka takes them (``host:port``, no scheme)."""
        return f"{self.host}:{self.ports.kafka}"
