"""Renders ``nginx/nginx.conf.template`` for the local stack (``configs.nginx_conf`` calls
:func:`render`; the CLI renders every config of the stack it supervises).

The template uses :class:`string.Template` placeholders: ``$listen_port``,
``$upstream_servers``, ``$state_dir`` and ``$body_limit``. nginx's own variables are written
``$$var`` in the template. Start nginx with ``-e <state_dir>/error.log`` (so it never tries the
distribution's log path) and ``-g 'daemon off;'`` under a supervisor; the template sets neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from string import Template

from driftloop_contracts import HOST

#: Must be at least the replicas' ``max_body_bytes`` (1 MiB by default).
DEFAULT_BODY_LIMIT = "1m"

#: The only paths nginx forwards to the replicas (an exact ``location`` each in the template
#: and its Docker twin; docs/api.md lists them). Everything else, the replicas' ``/metrics``
#: and ``/health/*`` included, is a 404 at nginx: Prometheus and the supervisor reach each
#: replica directly.
PUBLIC_ROUTES = ("/predict", "/predict/batch", "/feedback", "/model", "/docs", "/openapi.json")


def upstream_servers(replica_ports: Iterable[int], host: str = HOST) -> str:
    """One ``server`` line per replica; one failure takes it out of rotation for 2 s."""
    lines = [f"server {host}:{port} max_fails=1 fail_timeout=2s;" for port in replica_ports]
    if not lines:
        raise ValueError("nginx needs at least one model_api replica port")
    return "\n        ".join(lines)


def render(
    template_path: str | Path,
    *,
    listen_port: int,
    replica_ports: Iterable[int],
    state_dir: str | Path,
    body_limit: str = DEFAULT_BODY_LIMIT,
) -> str:
    """The nginx.conf text; ``state_dir`` holds pid, temp paths and logs (created here).

    Example::

        text = render("nginx/nginx.conf.template", listen_port=18000,
                      replica_ports=[18010, 18011], state_dir=".driftloop/nginx")
    """
    state = Path(state_dir).resolve()
    for sub in ("", "tmp", "logs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    template = Template(Path(template_path).read_text(encoding="utf-8"))
    return template.substitute(
        listen_port=int(listen_port),
        upstream_servers=upstream_servers(replica_ports),
        state_dir=str(state),
        body_limit=body_limit,
    )
