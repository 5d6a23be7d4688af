"""``python -m driftloop_bridge``: validate settings and rules, then serve with uvicorn.

A missing or invalid setting (e.g. ``DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN``) or a bad rules file
ends the process with status 2 and one line naming the variable or the rule.
"""

from __future__ import annotations

import sys

import uvicorn

from driftloop_contracts import SettingsError, load_settings
from driftloop_contracts.logs import configure_logging

from .app import create_app
from .errors import RulesError
from .rules import load_rules
from .settings import BridgeSettings


def main() -> int:
    try:
        settings = load_settings(BridgeSettings)
    except SettingsError as exc:
        print(f"driftloop-bridge: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        rules = load_rules(settings.rules_file)
    except RulesError as exc:
        print(f"driftloop-bridge: DRIFTLOOP_BRIDGE_RULES_FILE: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, rules=rules)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
