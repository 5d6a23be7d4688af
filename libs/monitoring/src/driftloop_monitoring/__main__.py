"""Write (or, with --check, verify) every generated monitoring file.

uv run python -m driftloop_monitoring          # rewrite the files (also: driftloop-monitoring)
uv run python -m driftloop_monitoring --check  # exit 1 if any file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .render import files

#: The repository this member lives in (libs/monitoring/src/driftloop_monitoring/..): the
#: generated files sit at fixed paths under it (grafana/, prometheus/rules/).
REPO_ROOT = Path(__file__).resolve().parents[4]


def stale_files(root: Path) -> dict[str, str]:
    """Generated files (path relative to ``root`` -> new text) that differ from what is on disk."""
    return {
        rel: text
        for rel, text in files().items()
        if not (root / rel).exists() or (root / rel).read_text() != text
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="driftloop-monitoring",
        description="Render Grafana provisioning, dashboards and Prometheus alert rules.",
    )
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    args = parser.parse_args(argv)
    stale = stale_files(args.root)
    for rel, text in stale.items():
        if not args.check:
            path = args.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        print(("stale: " if args.check else "wrote: ") + rel)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
