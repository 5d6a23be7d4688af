"""How fast the loop closes: drift onset → new champion on every replica, against the 60 s goal.

Runs the same scenario as `driftloop demo` (steady traffic, then sudden covariate + concept
drift) on the local stack (started if needed, base port from DRIFTLOOP_BASE_PORT, default 18000)
and prints each stage's time since onset next to the goal.

    uv run python bench/bench_loop.py [--users 8] [--steady 30]
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console

from driftloop_cli import observe, stack
from driftloop_cli.commands.bootstrap import run_bootstrap
from driftloop_cli.demo import DemoOptions, endpoints, run
from driftloop_cli.settings import StackSettings
from driftloop_cli.timeline import Observed, Stage

GOAL_RECOVER_S = 60.0


class Quiet:
    """Stage lines on stderr; no live status line (stdout keeps the comparison table)."""

    def stage(self, rec: Observed) -> None:
        print(f"  t+{rec.at:6.1f}s  {rec.title}: {rec.detail}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    def waiting(self, what: str, remaining_s: float) -> None: ...

    def waiting_stage(self, stage: Stage, elapsed_s: float) -> None: ...


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--steady", type=int, default=30)
    args = parser.parse_args()

    s = StackSettings().resolved()
    stack.up(s)
    # Every run starts from a champion trained on the base data only (announced to the replicas),
    # so an earlier run's adapted champion cannot make the steady phase look drifted.
    run_bootstrap(s, force=True, console=Console(stderr=True))
    ep = endpoints(s)
    champion = observe.champion_version(ep)
    if champion is None:
        print("no champion registered after the bootstrap", file=sys.stderr)
        return 1
    want = str(champion["version"])
    deadline = time.monotonic() + 120
    while set(observe.replica_versions(ep).values()) != {want}:
        if time.monotonic() > deadline:
            print(f"replicas did not switch to version {want}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    summary = run(s, DemoOptions(users=args.users, steady_s=args.steady), Quiet())

    print("\n## driftloop loop latency (one run, seconds since drift onset)\n")
    print("| stage | driftloop | goal | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for st in summary.stages:
        goal = GOAL_RECOVER_S if st["key"] == "replicas_serving" else None
        ratio = f"{st['at'] / goal:.2f}" if goal else ""
        print(f"| {st['title']} | {st['at']:.1f} | {goal or ''} | {ratio} |")
    print(
        f"\nrequests {summary.requests}, failed {summary.failed_requests}; events {summary.events}"
    )
    if summary.error:
        print(f"\nerror: {summary.error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
