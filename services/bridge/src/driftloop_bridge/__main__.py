"""``python -m driftloop_bridge``: validate settings and rules, then serve with uvicorn.

A missing or invalid setting (e.g. ``DRIFTLOOP_BRIDGE_WEBHOOK_TOKEN``) or a bad rules file
ends the process with status 2 and one line naming the variable or the rule.
"""

from __future__ import annotations

import sys

from driftloop_contracts.logs import configure_logging
from driftloop_service import serve, settings_or_exit

from .app import create_app
from .errors import RulesError
from .rules import load_rules
from .settings import BridgeSettings


def main() -> int:
    settings = settings_or_exit(BridgeSettings, "driftloop-bridge")
    configure_logging(settings.log_format, settings.log_level)
    try:
        rules = load_rules(settings.rules_file)
    except RulesError as exc:
        print(f"driftloop-bridge: DRIFTLOOP_BRIDGE_RULES_FILE: {exc}", file=sys.stderr)
        return 2
    serve(
        create_app(settings, rules=rules),
        host=settings.host,
        port=settings.port,
        graceful_shutdown_seconds=settings.graceful_shutdown_seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
