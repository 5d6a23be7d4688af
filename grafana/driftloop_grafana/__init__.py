"""driftloop's monitoring configuration, generated from one Python description.

Why code and not hand-written JSON/YAML: the Grafana alert rules and the Prometheus alert rules
must stay *the same expressions against the same threshold gauges*, the dashboards must use the
datasource uids the provisioning defines, and metric/feature/topic names come from
``driftloop_contracts``. One description renders all of them; ``grafana/generate.py`` writes the
files (committed), and ``tests/test_monitoring_config.py`` fails when they are stale.

Modules:

* :mod:`.names` -- datasource uids, dashboard uids, folder, contact point names.
* :mod:`.promql` -- a small PromQL splitter (top-level operators, operands, metric names).
* :mod:`.alerts` -- the alert rules, rendered for Prometheus and for Grafana.
* :mod:`.panels` / :mod:`.dashboards` -- the three dashboards.
* :mod:`.provisioning` -- datasources, dashboard provider, contact points, policies.
* :mod:`.render` -- every generated file, by repository path.
* :mod:`.queries` -- every query of the generated files, for the tests that run them live.
"""

from __future__ import annotations

__all__: list[str] = []
