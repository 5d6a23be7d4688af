"""Memory a worker thread freed, fragmented, goes back to the kernel after
:func:`release_freed_memory` (and stays resident without it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from driftloop_service.memory import release_freed_memory

    def rss_mib():
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith("VmRSS"))
        return int(line.split()[1]) // 1024

    kept = []
    def burst():
        # 200 MiB in 64 KiB blocks (under the mmap threshold: from the thread's arena); every
        # 16th kept, so the freed ones sit between live blocks and cannot be trimmed from the top
        blocks = [bytearray(64 * 1024) for _ in range(3200)]
        kept.extend(blocks[::16])
        blocks.clear()

    t = threading.Thread(target=burst)
    t.start(); t.join()
    before = rss_mib()
    if sys.argv[1] == "release":
        release_freed_memory()
    print(before, rss_mib())
    """
)


def rss_before_after(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = map(int, out.stdout.split())
    return before, after


def test_freed_arena_memory_is_released() -> None:
    before, after = rss_before_after("release")
    assert before - after > 120, (before, after)


def test_without_the_call_it_stays_resident_so_the_test_can_fail() -> None:
    before, after = rss_before_after("keep")
    assert before - after < 10, (before, after)


def test_settle_heap_collects_garbage_then_freezes_what_lives() -> None:
    import gc
    import weakref

    from driftloop_service.memory import settle_heap

    class Node:
        pass

    try:
        settle_heap()
        old = Node()
        old.me = old  # type: ignore[attr-defined]  # a cycle frozen while alive
        kept = Node()
        settle_heap()
        assert gc.get_freeze_count() > 0
        ref = weakref.ref(old)
        del old  # now garbage, but frozen: only the next settle (unfreeze first) frees it
        gc.collect()
        assert ref() is not None
        settle_heap()
        assert ref() is None
        assert not gc.is_finalized(kept)
    finally:
        gc.unfreeze()
