"""Drive supervisord: write its config from the component list, start it, talk to it over XML-RPC."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from .components import Component
from .settings import StackSettings


class SupervisorError(RuntimeError):
    pass


def conf_path(s: StackSettings) -> Path:
    return s.state_dir / "conf" / "supervisord.conf"


def socket_path(s: StackSettings) -> Path:
    return s.state_dir / "supervisor.sock"


def render(s: StackSettings, components: list[Component]) -> str:
    logs = s.logs_dir
    lines = [
        "[unix_http_server]",
        f"file={socket_path(s)}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={s.state_dir / 'supervisord.pid'}",
        f"directory={s.state_dir}",
        "nodaemon=false",
        "silent=true",
        "minfds=4096",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{socket_path(s)}",
        "",
    ]
    for c in components:
        env = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(c.env.items()))
        lines += [
            f"[program:{c.name}]",
            f"command={shlex.join(c.command)}",
            f"directory={c.directory}",
            f"priority={c.priority}",
            "autostart=true",
            "autorestart=true",
            f"startsecs={c.startsecs}",
            "startretries=100",
            "stopasgroup=true",
            "killasgroup=true",
            "stopwaitsecs=20",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (c.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if env:
            lines.append(f"environment={env}")
        lines.append("")
    return "\n".join(lines)


def _escape(value: str) -> str:
    # supervisor expands %(...)s in values and splits environment on commas outside quotes
    return value.replace("%", "%%").replace('"', '\\"')


def proxy(s: StackSettings) -> Any:
    transport = SupervisorTransport(None, None, f"unix://{socket_path(s)}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def is_running(s: StackSettings) -> bool:
    if not socket_path(s).exists():
        return False
    try:
        return proxy(s).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
        return False


def start_daemon(s: StackSettings) -> None:
    """Start supervisord (it daemonises) and wait until its socket answers."""
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf_path(s))],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SupervisorError(f"supervisord failed to start: {result.stderr or result.stdout}")
    deadline = time.monotonic() + 15
    while not is_running(s):
        if time.monotonic() > deadline:
            raise SupervisorError(
                f"supervisord did not answer on {socket_path(s)}; see {s.logs_dir}/supervisord.log"
            )
        time.sleep(0.1)


def apply_config(s: StackSettings) -> None:
    """Like `supervisorctl update`: add new programs, restart changed ones, drop removed ones."""
    rpc = proxy(s)
    added, changed, removed = rpc.supervisor.reloadConfig()[0]
    for name in removed:
        with contextlib.suppress(xmlrpc.client.Fault):
            rpc.supervisor.stopProcessGroup(name)
        rpc.supervisor.removeProcessGroup(name)
    for name in changed:
        with contextlib.suppress(xmlrpc.client.Fault):
            rpc.supervisor.stopProcessGroup(name)
        rpc.supervisor.removeProcessGroup(name)
        rpc.supervisor.addProcessGroup(name)
    for name in added:
        rpc.supervisor.addProcessGroup(name)


def start_all(s: StackSettings) -> None:
    rpc = proxy(s)
    for info in rpc.supervisor.getAllProcessInfo():
        if info["statename"] in {"STOPPED", "EXITED", "FATAL"}:
            with contextlib.suppress(xmlrpc.client.Fault):
                rpc.supervisor.startProcess(info["name"], False)


def process_info(s: StackSettings) -> dict[str, dict[str, Any]]:
    if not is_running(s):
        return {}
    return {i["name"]: i for i in proxy(s).supervisor.getAllProcessInfo()}


def control(s: StackSettings, action: str, name: str) -> None:
    """start/stop/restart one program and wait for supervisor to confirm."""
    rpc = proxy(s)
    if action in {"stop", "restart"}:
        try:
            rpc.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString:
                raise
    if action in {"start", "restart"}:
        try:
            rpc.supervisor.startProcess(name, True)
        except xmlrpc.client.Fault as exc:
            if "ALREADY_STARTED" not in exc.faultString:
                raise


def shutdown(s: StackSettings, timeout_s: float = 60) -> None:
    pid_file = s.state_dir / "supervisord.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    if is_running(s):
        proxy(s).supervisor.shutdown()
    if pid is None:
        return
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise SupervisorError(f"supervisord (pid {pid}) did not exit within {timeout_s}s")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False
