"""The compiled per-pixel passes of the CPU post-processing (``csrc/postprocess.cpp``), through ctypes.

``pip install`` (setup.py) and ``colcon build`` (CMakeLists.txt) compile the library into the
package directory; ``make setup`` also compiles it in place for the source tree. Where it is
missing (a copy of the sources without a build), or disabled with ``PANOPTIC_DEPTHLAB_NATIVE=0``,
the post-processing uses torch ops for the same results: :data:`LIBRARY` is None and
:data:`UNAVAILABLE` says why. Results of the two paths: the same labels, segments and order
statistics; probabilities and float sums within float rounding (test/test_native.py).
"""

from __future__ import annotations

import ctypes
import os
import sysconfig
from pathlib import Path

import numpy as np
from torch import Tensor

# The library's file name: that of a Python extension module of this interpreter (what setup.py
# builds; CMakeLists.txt gives its build the same name).
FILE_NAME = "_native" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
ENV_SWITCH = "PANOPTIC_DEPTHLAB_NATIVE"

_P = ctypes.c_void_p
_I64 = ctypes.c_int64


def _load() -> tuple[ctypes.CDLL | None, str]:
    """The library and '' or None and why not."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"{ENV_SWITCH}={os.environ[ENV_SWITCH]}"
    path = Path(__file__).with_name(FILE_NAME)
    if not path.is_file():
        return None, f"{path} is not built (make setup, pip install or colcon build compile it)"
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        return None, f"{path} does not load: {exc}"
    lib.pdl_argmax_probability.argtypes = [_P, _I64, _I64, _I64, _I64, _I64, _I64, _P, _P]
    lib.pdl_argmax_probability.restype = None
    return lib, ""


LIBRARY, UNAVAILABLE = _load()


def _pointer(t: Tensor | np.ndarray | None) -> int | None:
    if t is None:
        return None
    return int(t.data_ptr()) if isinstance(t, Tensor) else int(t.ctypes.data)


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


def readable(t: Tensor) -> bool:
    """Whether the library can read ``t`` in place: on the CPU, its last dimension contiguous."""
    return t.device.type == "cpu" and (t.shape[-1] <= 1 or t.stride(-1) == 1)


def usable(*tensors: Tensor) -> bool:
    """Whether the library is loaded and can read ``tensors`` in place."""
    return LIBRARY is not None and all(readable(t) for t in tensors)
