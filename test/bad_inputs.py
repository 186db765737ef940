"""The bad-input corpus: hostile and broken files, generated (no committed blobs).

Each generator writes one file (or tree) and returns its path. The tests run every case
through every entry point that takes it (``test_bad_input_corpus.py`` and the training
package's ``test_bad_input_corpus_training.py``) and check: no traceback, the named
error, the exit code, and that every file that was there before is byte-identical after.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


# ----------------------------------------------------------------------------- checks
def snapshot(root: Path) -> dict[Path, str]:
    """sha256 of every file under ``root`` (the files a run must leave byte-identical)."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(before: dict[Path, str]) -> None:
    """Every file of ``before`` still there with the same bytes."""
    for path, digest in before.items():
        assert path.is_file(), f"{path} was removed"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was changed"


@dataclass
class Run:
    """What one in-process CLI run gave: exit code and output."""

    code: int
    out: str
    err: str


def run_main(main: Callable[[list[str]], int], argv: list[str]) -> Run:
    """``main(argv)`` in this process: its code (argparse's SystemExit too) and what it printed.

    Any other exception propagates: for a CLI that is a traceback, and fails the test.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage line + one error line
            code = int(exc.code or 0)
    result = Run(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in result.out + result.err, result.err
    return result


# ----------------------------------------------------------------------------- images
def good_image(seed: int = 0, height: int = 64, width: int = 128) -> np.ndarray:
    """A BGR test frame with a little structure (sky-ish top rows)."""
    img = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    img[:20] = (180, 140, 90)
    return img


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` encoded as PNG."""
    return cv2.imencode(".png", image)[1].tobytes()


def png_declaring(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header declares ``width`` x ``height`` RGB pixels.

    Its data holds a few rows of zeros: a decoder believing the header allocates the
    whole image first (12000 x 12000 x 3 = 432 MB), or refuses it (over 2^30 pixels).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * min(4 * (1 + 3 * width), 1 << 20), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def bad_image_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, file suffix, words the error must contain)."""
    good = png_bytes(good_image(1))
    jpg = cv2.imencode(".jpg", good_image(2))[1].tobytes()
    return {
        "empty": (b"", ".png", "unreadable image"),
        "truncated_png": (good[: len(good) // 2], ".png", "unreadable image"),
        "truncated_jpeg": (jpg[:200], ".jpg", "unreadable image"),
        "random_bytes": (np.random.default_rng(3).bytes(5000), ".jpg", "unreadable image"),
        "text_named_png": (b"this is not a picture\n", ".png", "unreadable image"),
        "header_12000x12000": (png_declaring(12000, 12000), ".png", "above the limit --max-pixels="),
        "header_40000x40000": (png_declaring(40000, 40000), ".png", "absurd size"),
    }


# ----------------------------------------------------------------------------- checkpoints
def safetensors_with(path: Path, source: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of checkpoint ``source`` whose decoded header (``__metadata__`` JSON decoded) ``edit`` changed."""
    data = source.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    meta = header["__metadata__"]
    decoded = {
        k: json.loads(v) if k in ("model_config", "classes", "postprocess", "info") else v for k, v in meta.items()
    }
    header["__metadata__"] = decoded
    edit(header)
    header["__metadata__"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in header["__metadata__"].items()}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size :])
    return path


def _set(section: str, key: str, value: object) -> Callable[[dict], None]:
    def edit(header: dict) -> None:
        header["__metadata__"][section][key] = value

    return edit


def _replace_header(value: object) -> Callable[[Path, Path], Path]:
    def write(path: Path, source: Path) -> Path:
        raw = json.dumps(value).encode()
        path.write_bytes(len(raw).to_bytes(8, "little") + raw + source.read_bytes()[-64:])
        return path

    return write


def bad_checkpoints() -> dict[str, tuple[Callable[[Path, Path], Path], str]]:
    """name -> (writer(path, good checkpoint) -> path, words the error must contain)."""

    def meta(section: str, key: str, value: object) -> Callable[[Path, Path], Path]:
        return lambda path, src: safetensors_with(path, src, _set(section, key, value))

    def raw(data: Callable[[bytes], bytes]) -> Callable[[Path, Path], Path]:
        def write(path: Path, src: Path) -> Path:
            path.write_bytes(data(src.read_bytes()))
            return path

        return write

    def not_json(path: Path, src: Path) -> Path:
        return safetensors_with(path, src, lambda h: h["__metadata__"].update(model_config="{not json"))

    def info_list(path: Path, src: Path) -> Path:
        return safetensors_with(path, src, lambda h: h["__metadata__"].update(info=[1, 2]))

    def wrong_shape(path: Path, src: Path) -> Path:
        def edit(h: dict) -> None:
            h["__metadata__"]["model_config"]["num_classes"] = 18
            h["__metadata__"]["classes"]["names"] = h["__metadata__"]["classes"]["names"][:18]
            h["__metadata__"]["classes"]["colors"] = h["__metadata__"]["classes"]["colors"][:18]
            h["__metadata__"]["classes"]["dataset_ids"] = h["__metadata__"]["classes"]["dataset_ids"][:18]
            h["__metadata__"]["classes"]["thing_ids"] = [t for t in h["__metadata__"]["classes"]["thing_ids"] if t < 18]

        return safetensors_with(path, src, edit)

    def not_ours(path: Path, src: Path) -> Path:
        return safetensors_with(path, src, lambda h: h["__metadata__"].pop("format"))

    return {
        "aspp_pool_kernel_size": (meta("model_config", "aspp_pool_kernel_size", [0, -3]), "aspp_pool_kernel_size"),
        "size_divisibility": (meta("model_config", "size_divisibility", 1000000), "size_divisibility"),
        "stem_channels": (meta("model_config", "stem_channels", 10000000), "stem_channels"),
        "max_depth_nan": (meta("model_config", "max_depth", float("nan")), "max_depth"),
        "min_depth_negative": (meta("model_config", "min_depth", -2.0), "min_depth"),
        "pixel_std_zero": (meta("model_config", "pixel_std", [0.0, 57.12, 57.375]), "pixel_std"),
        "resnet_depth_text": (meta("model_config", "resnet_depth", "fifty"), "resnet_depth"),
        "resnet_depth_bool": (meta("model_config", "resnet_depth", True), "resnet_depth"),
        "branch_not_mapping": (meta("model_config", "depth", [1, 2]), "depth"),
        "unknown_config_key": (meta("model_config", "turbo", 1), "turbo"),
        "color_short": (meta("classes", "colors", [[1, 2]] * 19), "colors[0]"),
        "label_divisor_zero": (meta("classes", "label_divisor", 0), "label_divisor"),
        "names_not_strings": (meta("classes", "names", list(range(19))), "names"),
        "nms_kernel_even": (meta("postprocess", "nms_kernel", 4), "nms_kernel"),
        "center_threshold_nan": (meta("postprocess", "center_threshold", float("nan")), "center_threshold"),
        "top_k_text": (meta("postprocess", "top_k", "many"), "top_k"),
        "config_not_json": (not_json, "not JSON"),
        "info_not_mapping": (info_list, "info must be a mapping"),
        "class_count_mismatch": (wrong_shape, "shape mismatch"),
        "not_our_format": (not_ours, "not a panoptic-depthlab checkpoint"),
        "header_is_a_list": (_replace_header([1, 2, 3]), "not a mapping"),
        "header_length_absurd": (raw(lambda d: (10**15).to_bytes(8, "little") + d[8:]), "bad header length"),
        "truncated_weights": (raw(lambda d: d[: len(d) // 2]), "corrupt or truncated weights"),
        "empty": (raw(lambda d: b""), "bad header length"),
    }


# ----------------------------------------------------------------------------- pickles
class _Evil:
    def __reduce__(self):  # noqa: D105
        return (print, ("pwned",))


def bad_pickles(good_weights: dict[str, np.ndarray]) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, words the error must contain); Detectron2 .pkl layout ``{"model": {...}}``."""
    key = next(iter(good_weights))

    def with_entry(k: object, value: object) -> bytes:
        model = dict(good_weights)
        model[k] = value  # type: ignore[index]
        return pickle.dumps({"model": model}, protocol=2)

    whole = pickle.dumps({"model": good_weights}, protocol=2)
    return {
        "empty": (b"", "empty file"),
        "truncated": (whole[: len(whole) // 2], "truncated or corrupt pickle"),
        "object_array": (with_entry(key, np.array([1, "two", None], dtype=object)), "not numeric arrays"),
        "string_array": (with_entry(key, np.array(["a", "b"])), "not numeric arrays"),
        "non_string_key": (with_entry(7, np.zeros(3, np.float32)), "keys that are not strings"),
        "code_execution": (pickle.dumps({"model": {"x": _Evil()}}), "unsafe pickle"),
        "no_state_dict": (pickle.dumps([1, 2, 3]), "no state dict"),
    }


# ----------------------------------------------------------------------------- bags
def corrupt_mcap_chunk(mcap: Path, chunk_start: int) -> None:
    """Smash the CRC of the chunk starting at ``chunk_start`` (a bad disk block)."""
    data = bytearray(mcap.read_bytes())
    at = chunk_start + 9 + 24  # opcode, length, start, end, uncompressed size
    data[at : at + 4] = b"\xef\xbe\xad\xde"
    mcap.write_bytes(bytes(data))


def iter_cases(cases: dict) -> Iterator[tuple[str, object]]:
    """Sorted items (stable test ids)."""
    yield from sorted(cases.items())
