"""``locust -f loadtest/locustfile.py``: the load test's entry point for people and Docker.

The users and locust hooks live in the workspace member's package
(:mod:`driftloop_loadtest.locustfile`, installed with its declared dependencies); importing it
registers the hooks, and locust collects the user class named here. ``driftloop demo`` and the
tests run that module's file directly (:data:`driftloop_loadtest.command.LOCUSTFILE`)::

    uv run locust -f loadtest/locustfile.py --host http://127.0.0.1:18000 \\
        --headless -u 8 -r 8 -t 5m --schedule "steady:30,sudden+concept"
"""

from driftloop_loadtest.locustfile import DriftloopUser

__all__ = ["DriftloopUser"]
