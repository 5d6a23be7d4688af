"""Memory of long-running services: :func:`release_freed_memory` gives what a transient freed
back to the kernel (glibc's ``malloc_trim``); :func:`settle_heap` keeps long-lived objects out
of the cyclic collector's full passes (``gc.freeze``).

Why: a burst of large numpy temporaries in a worker thread (the drift consumer's sequential
calibration) is freed into glibc's arenas, which keep it: glibc raises its mmap threshold
after the first large free, so later blocks come from the heap and stay resident. Measured on
the drift consumer at rest after its first calibration: 368 MiB, 273 MiB after one
``malloc_trim(0)`` (docs/performance.md, "Memory at rest"). The call is cheap (milliseconds)
and is made after such a transient, where it was measured to pay, not on a timer.

Not glibc (musl, macOS): nothing to do, and :func:`release_freed_memory` returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

__all__ = ["release_freed_memory", "settle_heap"]


@functools.cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return free heap pages of every arena to the kernel; True if any were released."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def settle_heap() -> None:
    """Collect once, then put every surviving object out of the cyclic collector's reach.

    Why: a model replica holds ~1M tracked objects (scikit-learn, scipy, pandas, MLflow and
    the model), and a full collection walks them all: 85-97 ms measured, on the event loop,
    whenever the collector's generation-2 heuristic fires under load, which is what the
    serving bench's p99 showed (docs/performance.md, "Serving"). ``gc.freeze`` moves them to
    the permanent generation (the CPython docs' advice for long-lived servers). Called after
    each model load: the previous freeze is undone first, so the old model's objects can be
    collected, and one full collection (the same ~90 ms, once per promotion) runs here.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
