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
