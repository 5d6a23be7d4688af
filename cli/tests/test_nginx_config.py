"""The nginx template renders, and nginx itself accepts the result."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from driftloop_cli.nginx_config import render

TEMPLATE = Path(__file__).resolve().parents[2] / "nginx" / "nginx.conf.template"


def test_render_fills_every_placeholder(tmp_path: Path) -> None:
    text = render(
        TEMPLATE, listen_port=31900, replica_ports=[31910, 31911], state_dir=tmp_path / "nginx"
    )
    assert "listen 127.0.0.1:31900;" in text
    assert "server 127.0.0.1:31910 max_fails=1 fail_timeout=2s;" in text
    assert "server 127.0.0.1:31911 max_fails=1 fail_timeout=2s;" in text
    assert f"pid {tmp_path / 'nginx'}/nginx.pid;" in text
    assert "client_max_body_size 1m;" in text
    assert "least_conn;" in text and "non_idempotent" in text
    assert "$upstream_response_time" in text and "$$" not in text


def test_no_replicas_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        render(TEMPLATE, listen_port=1, replica_ports=[], state_dir=tmp_path)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render(TEMPLATE, listen_port=31900, replica_ports=[31910], state_dir=tmp_path / "state")
    )
    result = subprocess.run(
        ["nginx", "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
