"""Write (or, with --check, verify) every generated monitoring file.

uv run python grafana/generate.py          # rewrite the files
uv run python grafana/generate.py --check  # exit 1 if any file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from driftloop_grafana.render import files  # noqa: E402


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for rel, text in files().items():
        path = REPO / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for rel in stale:
        print(("stale: " if check else "wrote: ") + rel)
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
