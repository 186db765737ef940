"""Recover what a killed recorder left: bag files cut short, which no reader opens.

A recorder that is killed or loses power stops mid-file.  An MCAP then has no
summary, no footer and a half-written last record; a sqlite3 ``.db3`` is shorter than
its header says, and SQLite refuses the whole file ("database disk image is
malformed").  Both are salvaged into a new, valid file holding every complete message
written before the cut; nothing is repaired in place.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import BagError

MCAP_MAGIC = b"\x89MCAP0\r\n"
_RECORD = struct.Struct("<BQ")  # MCAP record framing: opcode, content length
_OP_FOOTER, _OP_DATA_END = 0x02, 0x0F
SQLITE_MAGIC = b"SQLite format 3\x00"
# A lookup of a message id that is gone fails on its own; this many in a row ends the search.
_DB3_MISSES_TO_STOP = 64


@dataclass(frozen=True)
class Salvage:
    """What a salvage kept of a cut-short bag file."""

    source: Path
    kept_bytes: int  # of the source: the prefix the kept records come from
    size: int
    records: int  # MCAP records, or sqlite3 messages


def is_cut_short(path: Path) -> bool:
    """True for an MCAP or sqlite3 bag file that starts right but ends early."""
    if path.suffix == ".mcap":
        return mcap_is_cut_short(path)
    if path.suffix == ".db3":
        return db3_is_cut_short(path)
    return False


def salvage(src: Path, dst: Path) -> Salvage:
    """Salvage a cut-short ``src`` (``.mcap`` or ``.db3``) into ``dst`` of the same kind."""
    return salvage_mcap(src, dst) if src.suffix == ".mcap" else salvage_db3(src, dst)


# ------------------------------------------------------------------------ MCAP
def mcap_is_cut_short(path: Path) -> bool:
    """True for an MCAP file that starts right but lacks the closing magic (no footer)."""
    with path.open("rb") as f:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            return False  # not MCAP at all: the reader's own error says so
        f.seek(0, os.SEEK_END)
        if f.tell() < 2 * len(MCAP_MAGIC):
            return True
        f.seek(-len(MCAP_MAGIC), os.SEEK_END)
        return f.read() != MCAP_MAGIC


def salvage_mcap(src: Path, dst: Path, *, block: int = 1 << 20) -> Salvage:
    """Copy the complete records of a cut-short MCAP ``src`` into a valid MCAP ``dst``.

    Records are copied byte for byte (chunks stay compressed) up to the first one that
    runs past the end of the file, or up to the data section's end if the cut fell in
    the summary.  ``dst`` then gets a DataEnd record and a footer without a summary,
    which readers answer by scanning the data: what ``mcap recover`` does, in Python.
    """
    size = src.stat().st_size
    records = 0
    with src.open("rb") as f, dst.open("wb") as out:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise BagError(f"{src}: not an MCAP file (bad magic)")
        out.write(MCAP_MAGIC)
        kept = f.tell()
        while True:
            frame = f.read(_RECORD.size)
            if len(frame) < _RECORD.size:
                break
            op, length = _RECORD.unpack(frame)
            if op in (_OP_DATA_END, _OP_FOOTER) or kept + _RECORD.size + length > size:
                break
            out.write(frame)
            left = length
            while left:
                piece = f.read(min(block, left))
                out.write(piece)
                left -= len(piece)
            kept += _RECORD.size + length
            records += 1
        out.write(_RECORD.pack(_OP_DATA_END, 4) + struct.pack("<I", 0))  # no data CRC: 0 means unset
        out.write(_RECORD.pack(_OP_FOOTER, 20) + struct.pack("<QQI", 0, 0, 0) + MCAP_MAGIC)
    return Salvage(src, kept, size, records)


# --------------------------------------------------------------------- sqlite3
def _db3_header(path: Path) -> tuple[int, int | None, int] | None:
    """(page size, page count the header claims or None, file size); None if not SQLite."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return None
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = struct.unpack(">II", head[24:32])
    (valid_for,) = struct.unpack(">I", head[92:96])
    # SQLite trusts the header's page count only when it was written by the same change.
    return page_size, (pages if pages and change_counter == valid_for else None), size


def db3_is_cut_short(path: Path) -> bool:
    """True for a sqlite3 file shorter than its header says (or not whole pages)."""
    header = _db3_header(path)
    if header is None:
        return False  # not SQLite at all: the reader's own error says so
    page_size, pages, size = header
    return size % page_size != 0 or (pages is not None and pages * page_size > size)


def salvage_db3(src: Path, dst: Path) -> Salvage:
    """Copy every readable message of a cut-short rosbag2 ``.db3`` into a new ``dst``.

    A copy of ``src`` is trimmed to whole pages and its header told the true page
    count, so SQLite reads what is there; tables and indexes are re-created in ``dst``
    from the file's own schema, the small tables copied whole, and ``messages`` row by
    row in id order: a row whose pages are past the cut fails alone, and the search
    ends after a run of such failures.
    """
    header = _db3_header(src)
    if header is None:
        raise BagError(f"{src}: not a sqlite3 file (bad header)")
    page_size, _, size = header
    pages = size // page_size
    if pages < 1:
        raise BagError(f"{src}: cut short before its first page; nothing to salvage")
    trimmed = dst.with_name(dst.stem + ".trimmed.db3")
    with src.open("rb") as f, trimmed.open("wb") as out:
        shutil.copyfileobj(f, out)
        out.truncate(pages * page_size)
        out.seek(28)
        out.write(struct.pack(">I", pages))
    try:
        records = _copy_db3(trimmed, dst, src)
    finally:
        trimmed.unlink(missing_ok=True)
    return Salvage(src, pages * page_size, size, records)


def _columns_and_insert(db: sqlite3.Connection, table: str) -> tuple[str, str]:
    """``table``'s column list and an INSERT statement taking a row of them."""
    names = [f'"{c[1]}"' for c in db.execute(f'PRAGMA table_info("{table}")')]
    return ", ".join(names), f'INSERT INTO "{table}" ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})'


def _copy_db3(old_path: Path, dst: Path, src: Path) -> int:
    old = sqlite3.connect(f"file:{old_path}?mode=ro", uri=True)
    new = sqlite3.connect(dst)
    try:
        try:
            schema = old.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        except sqlite3.DatabaseError as exc:
            raise BagError(f"{src}: cut short inside its schema; nothing to salvage ({exc})") from exc
        if "messages" not in {name for kind, name, _ in schema if kind == "table"}:
            raise BagError(f"{src}: no messages table; not a rosbag2 sqlite3 file")
        schema = [row for row in schema if not row[1].startswith("sqlite_")]  # SQLite makes its own
        for _, _, sql in sorted(schema, key=lambda row: row[0] != "table"):  # tables before indexes
            new.execute(sql)
        for kind, name, _ in schema:
            if kind != "table" or name == "messages":
                continue
            columns, insert = _columns_and_insert(old, name)
            try:
                rows = old.execute(f'SELECT {columns} FROM "{name}"').fetchall()
            except sqlite3.DatabaseError as exc:
                raise BagError(f"{src}: table {name!r} is past the cut; cannot salvage ({exc})") from exc
            new.executemany(insert, rows)
        columns, insert = _columns_and_insert(old, "messages")
        select = f"SELECT {columns} FROM messages WHERE id = ?"
        records, misses, msg_id = 0, 0, 1
        try:
            first = old.execute("SELECT min(id) FROM messages").fetchone()[0]
            msg_id = int(first) if first is not None else 1
        except sqlite3.DatabaseError:
            pass
        while misses < _DB3_MISSES_TO_STOP:
            try:
                row = old.execute(select, (msg_id,)).fetchone()
            except sqlite3.DatabaseError:
                row = None
            if row is None:
                misses += 1
            else:
                new.execute(insert, row)
                records, misses = records + 1, 0
            msg_id += 1
        new.commit()
        return records
    finally:
        old.close()
        new.close()
