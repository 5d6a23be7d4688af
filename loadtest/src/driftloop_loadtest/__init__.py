"""driftloop's load test: locust users with drift scenarios, and the tools to run and read it.

Modules: :mod:`.scenarios` (pure: schedules, drift, truth, bad bodies), :mod:`.options` (the
locust options and their validation), :mod:`.dataset` (the California housing rows),
:mod:`.locustfile` (users and locust hooks: I/O only), :mod:`.command` (the headless command
line for callers that run locust as a subprocess), :mod:`.results` (reading the reports back).
Importing the package imports no locust or gevent; only :mod:`.locustfile` does.
"""
