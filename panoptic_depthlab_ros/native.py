"""The compiled per-pixel passes of the CPU post-processing (``csrc/postprocess.cpp``), through ctypes.

``pip install`` (setup.py) and ``colcon build`` (CMakeLists.txt) compile the library into the
package's ``lib/`` folder; ``make setup`` also compiles it in place for the source tree. Where it
is missing (a copy of the sources without a build), built from other sources, or disabled with
``PANOPTIC_DEPTHLAB_NATIVE=0``, the post-processing uses torch ops for the same results:
:data:`LIBRARY` is None and :data:`UNAVAILABLE` says why. Results of the two paths: the same
labels, segments and order statistics; probabilities and float sums within float rounding (the
tests of the passes run both ways).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path

import torch
from torch import Tensor

from .parallel import run_parallel, scratch

# The library, where setup.py and CMakeLists.txt put it: a folder without __init__.py, so that
# nothing that walks the package takes it for a module to import.
FILE_NAME = "libpdl_postprocess.so"
FOLDER = "lib"
ENV_SWITCH = "PANOPTIC_DEPTHLAB_NATIVE"
# pdl_interface_version() of the sources this module calls (raised with every change of a signature).
INTERFACE_VERSION = 1

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_F64 = ctypes.c_double
# The library's functions and their arguments (csrc/postprocess.cpp); none returns a value.
_SIGNATURES: dict[str, list[type]] = {
    "pdl_argmax_probability": [_P, _I64, _I64, _I64, _I64, _I64, _I64, _P, _P],
    "pdl_segment_sums": [_P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _P],
    "pdl_segment_gather": [_P, _P, _P, _I64, _I64, _I64, _I64, _P, _P],
    "pdl_segment_order": [_P, _P, _I64, _I64, _F64, _P, _P, _P],
    "pdl_nearest_center": [_P, _I64, _I64, _I64, _P, _I64, _I64, _P, _I64, _P],
    "pdl_instance_class_counts": [_P, _P, _P, _I64, _I64, _I64, _P],
    "pdl_paint_classes": [_P, _I64, _I64, _P, _P, _P, _P],
    "pdl_paint_instances": [_P, _P, _I64, _I64, _P, _P, _P, _P],
}
# Parts of the image the per-segment sums are split into (then added in order): fixed, so that the
# float sums do not depend on the lanes.
SUM_PARTS = 8


def _load() -> tuple[ctypes.CDLL | None, str]:
    """The library and '' or None and why not."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"{ENV_SWITCH}={os.environ[ENV_SWITCH]}"
    path = Path(__file__).with_name(FOLDER) / FILE_NAME
    if not path.is_file():
        return None, f"{path} is not built (make setup, pip install or colcon build compile it)"
    try:
        lib = ctypes.CDLL(str(path))
        lib.pdl_interface_version.restype = _I64
        version = lib.pdl_interface_version()
    except (OSError, AttributeError) as exc:
        return None, f"{path} does not load: {exc}"
    if version != INTERFACE_VERSION:
        return None, f"{path} was built from other sources (interface {version}, not {INTERFACE_VERSION}): rebuild it"
    for name, argtypes in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, None
    return lib, ""


LIBRARY, UNAVAILABLE = _load()


def describe() -> str:
    """One line for logs: which CPU post-processing runs, and why the torch ops if they do."""
    if LIBRARY is not None:
        return f"CPU post-processing: compiled passes ({Path(LIBRARY._name).name})"
    return f"CPU post-processing: torch ops ({UNAVAILABLE})"


def _pointer(t: Tensor | None) -> int | None:
    return None if t is None else int(t.data_ptr())


def argmax_probability(x: Tensor, label: Tensor, probability: Tensor | None, r0: int, r1: int) -> None:
    """Rows [r0, r1) of ``x`` [C, H, W] float32: ``label`` [H, W] uint8 and ``probability`` [H, W] float32 (or None).

    The first class with the maximum score (torch.argmax, NaN first) and its softmax
    probability (NaN where a score is NaN). ``x`` may be a view (rows and channels strided, see
    :func:`readable`); the outputs are contiguous. Releases the GIL.
    """
    assert LIBRARY is not None
    num, _, width = x.shape
    LIBRARY.pdl_argmax_probability(
        _pointer(x), num, x.stride(0), x.stride(1), width, r0, r1, _pointer(label), _pointer(probability)
    )


def nearest_center(offset: Tensor, index: Tensor, centers: Tensor, member: Tensor) -> None:
    """``member`` [N] int64 (written): the nearest of ``centers`` [K, 2] to where pixels ``index`` [N] point.

    ``offset`` [2, H, W] float32 (dy, dx; a view with strided rows reads in place), ``index``
    flat pixel indices (int64, contiguous); the squared distances round as torch's and ties go
    to the lowest center, as the dense argmin of :func:`.fusion._nearest_center`. Releases the GIL.
    """
    assert LIBRARY is not None
    c = centers.to(torch.float32).contiguous()
    LIBRARY.pdl_nearest_center(
        _pointer(offset),
        offset.stride(0),
        offset.stride(1),
        offset.shape[-1],
        _pointer(index),
        0,
        index.numel(),
        _pointer(c),
        c.shape[0],
        _pointer(member),
    )


def instance_class_counts(
    labels: Tensor, index: Tensor, member: Tensor, num_instances: int, num_classes: int
) -> Tensor:
    """[K, C] int64: how many pixels of each instance have each class.

    ``index`` [N] flat pixel indices into ``labels`` (uint8), ``member`` [N] int64 their
    instances (below ``num_instances``).
    """
    assert LIBRARY is not None
    counts = torch.zeros((num_instances, num_classes), dtype=torch.int64)
    LIBRARY.pdl_instance_class_counts(
        _pointer(labels), _pointer(index), _pointer(member), 0, index.numel(), num_classes, _pointer(counts)
    )
    return counts


def paint(
    labels: Tensor,
    index: Tensor,
    member: Tensor,
    stuff: tuple[Tensor, Tensor],
    things: tuple[Tensor, Tensor] | None,
    lanes: int,
) -> tuple[Tensor, Tensor]:
    """The panoptic map and the segment map [P] int32 of flat uint8 ``labels``.

    ``stuff``: int32 tables [C <= 256] (the value and the segment of each class's pixels); ``things``:
    int32 tables [K] (those of each instance), written over the instances' pixels ``index`` [N]
    (member [N]) after the classes. The classes' pass is split over ``lanes``.
    """
    assert LIBRARY is not None
    pixels = labels.numel()
    panoptic = torch.empty(pixels, dtype=torch.int32)
    seg = torch.empty(pixels, dtype=torch.int32)
    # Tables of every uint8 value (0 beyond the classes, as the torch path's lookup table gives).
    value, segment = (torch.cat((t, t.new_zeros(256 - t.numel()))) for t in stuff)
    bounds = [pixels * i // lanes for i in range(lanes + 1)]
    tasks = [
        partial(
            LIBRARY.pdl_paint_classes,
            *(_pointer(labels), a, b),
            *(_pointer(t) for t in (value, segment, panoptic, seg)),
        )
        for a, b in pairwise(bounds)
    ]
    run_parallel(tasks, lanes)
    if things is not None and index.numel():
        thing_value, thing_seg = (t.contiguous() for t in things)
        LIBRARY.pdl_paint_instances(
            _pointer(index),
            _pointer(member),
            0,
            index.numel(),
            *(_pointer(t) for t in (thing_value, thing_seg, panoptic, seg)),
        )
    return panoptic, seg


def readable(t: Tensor) -> bool:
    """Whether the library can read ``t`` in place: on the CPU, its last dimension contiguous."""
    return t.device.type == "cpu" and (t.shape[-1] <= 1 or t.stride(-1) == 1)


def usable(*tensors: Tensor) -> bool:
    """Whether the library is loaded and can read ``tensors`` in place."""
    return LIBRARY is not None and all(readable(t) for t in tensors)


@dataclass
class SegmentSums:
    """What the per-pixel passes of the segment statistics give per segment ([n] each).

    Compiled (:func:`segment_sums`) or as torch ops (:mod:`.segment_stats`). extent: area,
    y_min, y_max, x_min, x_max, sum of y, sum of x (int64); count: counted depths (int64);
    sum_z, sum_zz, sum_uz, sum_vz: float64 sums of z, z^2, u z, v z over them (u the column, v
    the row; the torch ops leave the last two None without a camera); minimum, median (lower),
    trimmed (mean of the ranks ``[floor(count * trim), count - floor(count * trim))``):
    float64, NaN without counted depths; probability: float64 sums of the probability over the
    whole segment (at least [n]), None without it.
    """

    extent: tuple[Tensor, ...]
    count: Tensor
    sum_z: Tensor
    sum_zz: Tensor
    sum_uz: Tensor | None
    sum_vz: Tensor | None
    minimum: Tensor
    median: Tensor
    trimmed: Tensor
    probability: Tensor | None


def segment_sums(
    seg: Tensor,
    d: Tensor,
    counted: Tensor | None,
    probability: Tensor | None,
    *,
    n: int,
    height: int,
    width: int,
    trim: float,
    lanes: int,
) -> SegmentSums:
    """Per-segment extent, depth moments and order statistics in three compiled passes.

    ``seg`` [H*W] int32 segment of each pixel (``n``: none), ``d`` [H*W] float32 depths,
    ``counted`` [H*W] bool: the depths that may count (None: all; a depth counts only where it is
    also positive and finite), ``probability`` [H*W] float32
    (or None); all contiguous on the CPU. The image is summed in :data:`SUM_PARTS` parts of rows
    over ``lanes`` lanes, the parts added in order; then each segment's counted depths are
    gathered for the order statistics (partial sorts, or for many depths a histogram of their
    leading bits and a sort of the wanted ranks' buckets only).
    """
    assert LIBRARY is not None
    lib = LIBRARY
    parts = max(1, min(SUM_PARTS, height))
    rows = [height * i // parts for i in range(parts + 1)]
    extent = torch.empty((parts, 7, n), dtype=torch.int64)
    count = torch.empty((parts, n), dtype=torch.int64)
    moments = torch.empty((parts, 4, n), dtype=torch.float64)
    probability_sum = torch.empty((parts, n), dtype=torch.float64)
    c_counted = None if counted is None else counted.view(torch.uint8)

    def sums(i: int, r0: int, r1: int) -> None:
        lib.pdl_segment_sums(
            *(_pointer(t) for t in (seg, d, c_counted, probability)),
            height,
            width,
            r0,
            r1,
            n,
            *(_pointer(t[i]) for t in (extent, count, moments, probability_sum)),
        )

    run_parallel([partial(sums, i, r0, r1) for i, (r0, r1) in enumerate(pairwise(rows))], lanes)
    area, y_min, y_max, x_min, x_max, sum_y, sum_x = extent.unbind(1)
    total = count.sum(0)
    moment = moments.sum(0)  # parts in order
    starts = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(total, 0, out=starts[1:])
    # Where each part's depths of each segment start: the segment's start, then the earlier parts'.
    nexts = (starts[:-1] + count.cumsum(0) - count).contiguous()
    used = int(starts[-1])
    minimum, median, trimmed = (torch.empty(n, dtype=torch.float64) for _ in range(3))
    with scratch((max(used, 1),), torch.float32) as values:

        def gather(i: int, r0: int, r1: int) -> None:
            lib.pdl_segment_gather(
                _pointer(seg), _pointer(d), _pointer(c_counted), width, r0, r1, n, _pointer(nexts[i]), _pointer(values)
            )

        run_parallel([partial(gather, i, r0, r1) for i, (r0, r1) in enumerate(pairwise(rows))], lanes)
        # Segments in groups of about equal depth counts, one task each (a road is one segment).
        cuts = torch.searchsorted(starts, torch.arange(1, 2 * lanes) * used // (2 * lanes)).tolist()
        groups = sorted({0, *(min(c, n) for c in cuts), n})

        def order(k0: int, k1: int) -> None:
            lib.pdl_segment_order(
                _pointer(values), _pointer(starts), k0, k1, trim, *(_pointer(t) for t in (minimum, median, trimmed))
            )

        run_parallel([partial(order, k0, k1) for k0, k1 in pairwise(groups) if k1 > k0], lanes)
    return SegmentSums(
        extent=(area.sum(0), y_min.amin(0), y_max.amax(0), x_min.amin(0), x_max.amax(0), sum_y.sum(0), sum_x.sum(0)),
        count=total,
        sum_z=moment[0],
        sum_zz=moment[1],
        sum_uz=moment[2],
        sum_vz=moment[3],
        minimum=minimum,
        median=median,
        trimmed=trimmed,
        probability=None if probability is None else probability_sum.sum(0),
    )
