"""Reading rosbag2 bags (sqlite3 or MCAP) with the ``rosbags`` library, whole or salvaged.

What every bag reader here needs: the typestore of ROS 2 Jazzy plus our own messages
(``panoptic_depthlab_ros/msg/*``, from msg/); the sources to open (a bag rosbags reads as
it is, or else its files one by one in split order, cut-short ones salvaged, see
:mod:`.salvage`); their messages, with damage found while reading raised as a
:class:`BagError` naming the bag; and the message definitions an input bag carries (an
older ``SegmentDepthArray``, a custom type a bare ``.mcap`` gives no hash for), so a new
bag can hold them.  :func:`read_bag_frames` decodes some frames of an image topic (to
calibrate an INT8 export).  The ``bag`` command's replay, which reads through this
module, is :mod:`.bag`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from . import msg_conversions
from .errors import BagError, InputError, PanopticDepthLabError
from .image_io import DEFAULT_MAX_PIXELS
from .node_outputs import SEGMENT_ARRAY_TYPE
from .salvage import Salvage, is_cut_short, salvage
from .sources import BAG_FILE_SUFFIXES

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
PACKAGE = "panoptic_depthlab_ros"
MSG_NAMES = ("SegmentDepth", "SegmentDepthArray")


def msg_definition_dir() -> Path:
    """Where ``SegmentDepth.msg`` lives: the source tree, or an install's share/ directory."""
    candidates = [Path(__file__).resolve().parents[1] / "msg"]
    prefixes = [sys.prefix, *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    candidates += [Path(p) / "share" / PACKAGE / "msg" for p in prefixes if p]
    for c in candidates:
        if (c / "SegmentDepthArray.msg").is_file():
            return c
    raise PanopticDepthLabError(f"cannot find {PACKAGE}'s msg/ definitions (looked in {[str(c) for c in candidates]})")


def typestore_with_our_messages() -> Typestore:
    """ROS 2 Jazzy types plus ``panoptic_depthlab_ros/msg/*`` registered from msg/."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    folder = msg_definition_dir()
    types: dict[str, Any] = {}
    for name in MSG_NAMES:
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"{PACKAGE}/msg/{name}"))
    ts.register(types)
    return ts


def pick_topic(
    connections: list[Connection], bag: Path, topic: str | None, types: tuple[str, ...], what: str, required: bool
) -> Connection | None:
    """The connection of ``topic``, or else the only one of ``types`` (None: none and not ``required``).

    A :class:`BagError` lists the bag's topics when the choice fails; ``what`` names the
    command-line option that chooses (``image`` -> ``--image-topic``).
    """
    listing = ", ".join(f"{c.topic} [{c.msgtype}]" for c in connections) or "none"
    if topic is not None:
        matches = [c for c in connections if c.topic == topic]
        if not matches:
            raise BagError(f"{bag}: no topic {topic!r}; the bag has: {listing}")
        if matches[0].msgtype not in types:
            raise BagError(f"{bag}: topic {topic!r} is {matches[0].msgtype}, not {' or '.join(types)}")
        return matches[0]
    candidates = [c for c in connections if c.msgtype in types]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates and not required:
        return None
    reason = "several" if candidates else "no"
    raise BagError(
        f"{bag}: {reason} {what} topics, choose one with --{what.replace(' ', '-')}-topic; the bag has: {listing}"
    )


def _split_index(path: Path) -> tuple[int, str]:
    """rosbag2 names split files ``<bag>_0.mcap``, ``<bag>_1.mcap``, ...: order by that number."""
    tail = path.stem.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, path.name)


def bag_files(bag: Path) -> list[Path]:
    """The MCAP / sqlite3 files of a bag, in split order (none: not a bag we can salvage)."""
    if bag.is_dir():
        return sorted((f for f in bag.iterdir() if f.suffix in BAG_FILE_SUFFIXES), key=_split_index)
    return [bag] if bag.suffix in BAG_FILE_SUFFIXES else []


def readable_sources(bag: Path, workdir: Path, *, salvage_all: bool = False) -> tuple[list[Path], list[Salvage]]:
    """What to open, in order: the bag itself, or its files with cut-short ones salvaged.

    A bag rosbags can read as it is (``metadata.yaml`` present, every file whole) is
    one source.  Otherwise each MCAP or sqlite3 file is its own source, in split order.
    ``salvage_all`` salvages every file (damage was found inside one while reading).
    """
    files = bag_files(bag)
    if not files:
        if bag.is_dir() and not (bag / "metadata.yaml").exists():
            raise BagError(f"{bag}: not a bag: the folder holds no metadata.yaml and no .mcap or .db3 file")
        if bag.is_file():
            raise BagError(f"{bag}: not a bag: a ROS 2 bag is a folder or an .mcap or .db3 file")
        return [bag], []
    cut = [salvage_all or is_cut_short(f) for f in files]
    if bag.is_dir() and (bag / "metadata.yaml").exists() and not any(cut):
        return [bag], []
    workdir.mkdir(parents=True, exist_ok=True)
    sources, salvages = [], []
    for i, (file, is_cut) in enumerate(zip(files, cut, strict=True)):
        if is_cut:
            copy = workdir / f"salvaged_{i}{file.suffix}"
            salvages.append(salvage(file, copy))
            file = copy
        sources.append(file)
    return sources, salvages


def open_readers(sources: list[Path], bag: Path, stack: ExitStack) -> list[Reader]:
    """An open reader per source, closed by ``stack``; one that will not open is a :class:`BagError`."""
    readers = []
    for source in sources:
        try:
            reader = Reader(source)
            reader.open()
        except (ReaderError, OSError, ValueError, KeyError) as exc:
            name = bag if source == bag else f"{bag} ({source.name})"
            raise BagError(f"{name}: cannot open bag ({type(exc).__name__}: {exc})") from exc
        stack.callback(reader.close)
        readers.append(reader)
    return readers


def read_messages(
    reader: Reader, bag: Path, connections: list[Connection] | None = None
) -> Iterator[tuple[Connection, int, bytes]]:
    """``reader``'s messages (of ``connections``, else all); damage found while reading is a :class:`BagError`."""
    try:
        yield from reader.messages(connections=connections) if connections is not None else reader.messages()
    except Exception as exc:  # noqa: BLE001 - storage layers raise their own types (apsw, struct, zstd...)
        raise BagError(f"{bag}: corrupt or truncated bag ({type(exc).__name__}: {exc})") from exc


def read_bag_frames(
    bag: str | Path,
    pick: Callable[[int], list[int]],
    *,
    image_topic: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[list[np.ndarray], int, list[str]]:
    """Some BGR frames of ``bag``'s image topic (e.g. to calibrate an INT8 export).

    ``pick(total)`` says which message indices to decode, of the topic's ``total``. Returns
    the frames, ``total`` and the skipped frames (topic at stamp: reason). A cut-short bag
    is read from a salvaged copy, as a replay reads it.
    """
    bag = Path(bag)
    ts = typestore_with_our_messages()
    frames: list[np.ndarray] = []
    skipped: list[str] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pdl_bag_")))
        readers = open_readers(readable_sources(bag, workdir)[0], bag, stack)
        connections = list({c.topic: c for r in reversed(readers) for c in r.connections}.values())
        img_conn = pick_topic(connections, bag, image_topic, IMAGE_TYPES, "image", True)
        assert img_conn is not None
        total = sum(c.msgcount for r in readers for c in r.connections if c.topic == img_conn.topic)
        wanted = set(pick(total))
        index = 0
        for reader in readers:
            mine = [c for c in reader.connections if c.topic == img_conn.topic]
            if not mine:  # rosbags reads every topic for an empty list
                continue
            for conn, stamp_ns, raw in read_messages(reader, bag, mine):
                index += 1
                if index - 1 not in wanted:
                    continue
                try:
                    msg: Any = deserialize(ts, raw, conn)
                    convert = (
                        msg_conversions.compressed_to_bgr
                        if conn.msgtype.endswith("CompressedImage")
                        else msg_conversions.image_to_bgr
                    )
                    frames.append(convert(msg, max_pixels=max_pixels, limit_name="--max-pixels"))
                except InputError as exc:
                    skipped.append(f"{conn.topic} at {stamp_ns}: {exc}")
    return frames, total, skipped


def deserialize(ts: Typestore, raw: bytes, conn: Connection) -> Any:
    """A message of ``conn``'s type, or :class:`InputError` when the bytes are not one (wrong type, damage)."""
    try:
        return ts.deserialize_cdr(raw, conn.msgtype)
    except Exception as exc:  # noqa: BLE001 - the CDR decoder raises struct, index, unicode... errors
        raise InputError(f"{len(raw)} bytes that are not a {conn.msgtype} ({type(exc).__name__}: {exc})") from exc


def storage_of(bag: Path) -> StoragePlugin:
    """Keep the input's storage format (sqlite3 for ``.db3`` files, else MCAP)."""
    files = [bag] if bag.is_file() else list(bag.iterdir())
    return StoragePlugin.SQLITE3 if any(f.suffix == ".db3" for f in files) else StoragePlugin.MCAP


def older_definition(conn: Connection, ts: Typestore, bag: Path) -> Typestore | None:
    """A typestore with the bag's definition of our ``SegmentDepthArray`` when it differs from today's, else None.

    Only the segment array is a topic type of ours.  A connection without a definition
    (some salvaged or bare files) is taken to be today's.
    """
    if conn.msgtype != SEGMENT_ARRAY_TYPE or not conn.msgdef.data:
        return None
    try:
        theirs = get_types_from_msg(conn.msgdef.data, conn.msgtype)
    except Exception as exc:  # noqa: BLE001 - the parser raises its own grammar errors
        raise BagError(f"{bag}: topic {conn.topic!r}: cannot read the definition of {conn.msgtype} ({exc})") from exc
    ours = {name: ts.fielddefs[name] for name in theirs if name.startswith(f"{PACKAGE}/")}
    if all(theirs[name] == ours[name] for name in ours):
        return None
    older = get_typestore(Stores.ROS2_JAZZY)
    older.register(theirs)
    return older


def copy_connection(writer: Writer, conn: Connection, ts: Typestore, bag: Path) -> Connection:
    """Same topic, type, definition and QoS as the input connection.

    A type the store does not know and the bag gives no hash for (a custom message in a
    bare ``.mcap`` file, or a salvaged one) is registered from the bag's own definition.
    """
    qos = getattr(conn.ext, "offered_qos_profiles", [])
    if conn.msgdef.data and conn.digest.startswith("RIHS01_"):
        return writer.add_connection(
            conn.topic, conn.msgtype, msgdef=conn.msgdef.data, rihs01=conn.digest, offered_qos_profiles=qos
        )
    if conn.msgtype not in ts.types and conn.msgdef.data:
        try:
            ts.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        except Exception as exc:  # noqa: BLE001 - the parser raises its own grammar errors
            what = f"topic {conn.topic!r}: cannot read the definition of {conn.msgtype}"
            raise BagError(f"{bag}: {what} ({exc})") from exc
    return writer.add_connection(conn.topic, conn.msgtype, typestore=ts, offered_qos_profiles=qos)
