"""driftloop's monitoring files, rendered from one Python description.

Why code and not hand-written JSON/YAML: the Grafana alert rules and the Prometheus alert rules
must stay *the same expressions against the same threshold gauges*, the dashboards must use the
datasource uids the provisioning defines, and metric/feature/topic names come from
``driftloop_contracts``. One description renders all of them; ``python -m driftloop_monitoring``
writes the files (committed: grafana/provisioning/**, grafana/dashboards/*.json,
prometheus/rules/*.yml), and ``tests/test_monitoring_config.py`` fails when they are stale.

Modules:

* :mod:`.names` -- datasource uids, dashboard uids, folder, contact point names.
* :mod:`.alerts` -- the alert rules (one ``AlertSpec`` each), rendered for Prometheus and Grafana.
* :mod:`.panels` / :mod:`.dashboards` -- the three dashboards, on grafana-foundation-sdk.
* :mod:`.provisioning` -- datasources, dashboard provider, contact points, policies.
* :mod:`.render` -- every generated file, by repository path; :mod:`.__main__` writes them.
* :mod:`.provisioning_models` -- strict models of the provisioning files Grafana reads.
* :mod:`.dashboard_schema` -- dashboard JSON checked against the SDK's schema.
* :mod:`.promql` -- PromQL structure from promql-parser (operands, metric names).
* :mod:`.queries` -- every query of the generated files, for the tests that run them live.
"""

from __future__ import annotations

__all__: list[str] = []
