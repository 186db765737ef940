"""The CPU lane scheduler of the fusion and the segment statistics.

On CPU, torch splits every op over its OpenMP threads and each op then waits for all
of them: with ops of about a millisecond and cores shared with other processes, that
wait costs a scheduler time slice per op (the figures: docs/performance.md).  So the
post-processing runs its ops on one intra-op thread (:func:`cpu_lanes`) and hands
whole blocks of work to that many Python threads instead (:func:`run_parallel`),
which never wait for each other.  Results do not depend on the number of lanes.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch

# At most this many threads share the blocks of one call.
MAX_LANES = 4
# The fewest pixels worth a lane of their own: below that, starting a thread and waiting for
# its last task (a time slice when the cores are busy) costs more than the lane takes off.
LANE_PIXELS = 1 << 18
# Pixels per block of the per-pixel loops: keeps temporaries in cache (and reused).
BLOCK_PIXELS = 1 << 17
SMALL_BLOCK_PIXELS = 1 << 15


_lanes = threading.local()  # the lanes of the cpu_lanes block this thread is in, if any


@contextmanager
def cpu_lanes(device: torch.device) -> Iterator[int]:
    """Run the body with torch's intra-op threads at 1; yield how many lanes to use.

    The caller's thread budget (``torch.get_num_threads()``, at most :data:`MAX_LANES`)
    becomes the lanes of :func:`run_parallel`; the caller's setting is restored.  A block
    inside another one (the predictor's around the fusion's) keeps the outer one's lanes.
    Off the CPU: one lane and nothing changed.
    """
    if device.type != "cpu":
        yield 1
        return
    outer = getattr(_lanes, "count", None)
    if outer is not None:
        yield outer
        return
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    _lanes.count = max(1, min(before, MAX_LANES))
    try:
        yield _lanes.count
    finally:
        _lanes.count = None
        if before > 1:
            torch.set_num_threads(before)


def lanes_for(pixels: int, lanes: int, *, per_lane: int = LANE_PIXELS) -> int:
    """How many of ``lanes`` a per-pixel job over ``pixels`` pixels should use: each at least ``per_lane``.

    :data:`LANE_PIXELS` by default; a job whose parts have a larger fixed cost of their own
    than a thread's start passes its own.
    """
    return max(1, min(lanes, pixels // per_lane))


def run_parallel(tasks: Sequence[Callable[[], Any]], lanes: int) -> None:
    """Run every task once: the calling thread and ``lanes - 1`` helpers take them in order.

    Results must not depend on which thread runs a task (each task writes its own
    outputs).  Helpers use one intra-op thread and the caller's inference mode; the
    first exception is re-raised.  The helpers are threads kept between calls (starting
    threads for every call cost a few hundred microseconds a frame); a task that itself
    calls this runs its tasks in its own thread, so that no helper waits for another.
    """
    lanes = min(lanes, len(tasks))
    if lanes <= 1 or getattr(_helper, "active", False):
        for task in tasks:
            task()
        return
    counter = itertools.count()  # next() is atomic under the GIL
    errors: list[BaseException] = []
    inference = torch.is_inference_mode_enabled()

    def lane() -> None:
        try:
            with torch.inference_mode(inference):
                while not errors:
                    i = next(counter)
                    if i >= len(tasks):
                        return
                    tasks[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    # The caller's own lane always makes progress: helpers busy with another caller's tasks
    # only arrive late, find nothing left and return.
    helpers = [_helpers().submit(lane) for _ in range(lanes - 1)]
    lane()
    for helper in helpers:
        helper.result()
    if errors:
        raise errors[0]


_helper = threading.local()  # active: this thread is one of the pool's helpers
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _start_helper() -> None:
    _helper.active = True
    torch.set_num_threads(1)


def _helpers() -> ThreadPoolExecutor:
    """The helper threads of :func:`run_parallel`, started on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_LANES - 1, thread_name_prefix="pdl_lane", initializer=_start_helper)
        return _pool


def _forget_helpers() -> None:
    """In a forked child the parent's helper threads do not exist: start new ones when needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_helpers)


def row_blocks(h: int, w: int, pixels: int, device: torch.device) -> list[tuple[int, int]]:
    """Blocks of whole rows (r0, r1) of about ``pixels`` pixels (one block off the CPU)."""
    rows = max(1, pixels // max(w, 1)) if device.type == "cpu" else max(h, 1)
    return [(r0, min(r0 + rows, h)) for r0 in range(0, h, rows)]


# Sizes of scratch tensors the pool keeps (the least recently used go first); a folder of images
# of many sizes cannot grow it without end.
SCRATCH_SHAPES = 8
_scratch_lock = threading.Lock()
_scratch_free: dict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}


@contextmanager
def scratch(shape: Sequence[int], dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """A CPU tensor of ``shape`` and ``dtype`` to use as a temporary inside the block; its content is undefined.

    Taken from a pool and given back after the block, so that a pass repeated frame after
    frame does not map fresh memory each time: a fresh tensor of a megabyte or more costs
    page faults on first touch, and lanes that fault at once wait for each other in the
    kernel (what it measured: docs/design.md, post-processing). Never hand such a tensor out
    of the block.
    """
    key = (tuple(int(s) for s in shape), dtype)
    with _scratch_lock:
        free = _scratch_free.pop(key, [])
        tensor = free.pop() if free else None
        _scratch_free[key] = free  # most recently used last
    if tensor is None:
        with torch.inference_mode(False):  # a normal tensor: usable inside and outside inference mode
            tensor = torch.empty(key[0], dtype=dtype)
    try:
        yield tensor
    finally:
        with _scratch_lock:
            _scratch_free.setdefault(key, []).append(tensor)
            while len(_scratch_free) > SCRATCH_SHAPES:
                del _scratch_free[next(iter(_scratch_free))]
