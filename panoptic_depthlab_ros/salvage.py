"""Recover what a damaged bag file still holds: cut short, or corrupt in the middle.

A recorder that is killed or loses power stops mid-file.  An MCAP then has no
summary, no footer and a half-written last record; a sqlite3 ``.db3`` is shorter than
its header says, and SQLite refuses the whole file ("database disk image is
malformed").  A disk or a copy can also damage bytes in the middle: an MCAP chunk
that no longer decompresses or fails its checksum, sqlite3 pages that no longer
parse.  Either way the file is salvaged into a new, valid file holding every message
that is still whole (damaged chunks or rows are left out and counted); nothing is
repaired in place.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2.storage_mcap import decompress

from .errors import BagError

MCAP_MAGIC = b"\x89MCAP0\r\n"
_RECORD = struct.Struct("<BQ")  # MCAP record framing: opcode, content length
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_CHUNK, _OP_MESSAGE_INDEX, _OP_DATA_END = 0x02, 0x03, 0x04, 0x06, 0x07, 0x0F
SQLITE_MAGIC = b"SQLite format 3\x00"
# A lookup of a message id that is gone fails on its own; this many in a row ends the search.
_DB3_MISSES_TO_STOP = 64


@dataclass(frozen=True)
class Salvage:
    """What a salvage kept of a damaged (cut-short or corrupt) bag file."""

    source: Path
    kept_bytes: int  # of the source: the prefix the kept records come from
    size: int
    records: int  # MCAP records, or sqlite3 messages
    dropped: int = 0  # damaged MCAP chunks, or sqlite3 messages, left out before the end
    cut_short: bool = False  # the file ends early (else damaged inside only)

    def describe(self) -> str:
        """One line for the user: what was kept and what was lost."""
        what = "chunks" if self.source.suffix == ".mcap" else "messages"
        damaged = f"{self.dropped} damaged {what} left out; " if self.dropped else ""
        if self.cut_short:
            return (
                f"{self.source}: cut short (interrupted recording?): {damaged}kept the {self.records} complete "
                f"records in the first {self.kept_bytes} of {self.size} bytes; the rest is lost"
            )
        return f"{self.source}: damaged: {damaged}kept the {self.records} sound records"


def is_cut_short(path: Path) -> bool:
    """True for an MCAP or sqlite3 bag file that starts right but ends early."""
    if path.suffix == ".mcap":
        return mcap_is_cut_short(path)
    if path.suffix == ".db3":
        return db3_is_cut_short(path)
    return False


def salvage(src: Path, dst: Path) -> Salvage:
    """Salvage a damaged ``src`` (``.mcap`` or ``.db3``) into ``dst`` of the same kind."""
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


def _chunk_records(content: bytes, *, check: bool) -> bytes:
    """A chunk record's decompressed inner records (checked against its size and crc)."""
    _, _, uncompressed_size, crc, name_len = struct.unpack_from("<QQQII", content)
    compression = content[32 : 32 + name_len].decode()
    (data_len,) = struct.unpack_from("<Q", content, 32 + name_len)
    data = content[40 + name_len : 40 + name_len + data_len]
    if len(data) != data_len:
        raise ValueError("chunk data runs past its record")
    return decompress(data, compression, uncompressed_size, crc if check else 0)


def _walk(records: bytes) -> Iterator[tuple[int, bytes]]:
    """(opcode, whole record) for each record whose framing holds; stops at the first that does not."""
    at = 0
    while at + _RECORD.size <= len(records):
        op, length = _RECORD.unpack_from(records, at)
        end = at + _RECORD.size + length
        if end > len(records):
            return
        yield op, records[at:end]
        at = end


def _chunk_is_sound(content: bytes) -> bool:
    """Whether a chunk decompresses to its stated size and checksum, and its records' framing holds.

    Without a checksum (crc 0, as rosbags writes) the framing is all there is to check.
    """
    try:
        records = _chunk_records(content, check=True)
    except Exception:  # noqa: BLE001 - struct, unicode, lz4 and zstd each raise their own types on garbage
        return False
    return sum(len(r) for _, r in _walk(records)) == len(records)


def _definitions_in(content: bytes) -> bytes:
    """The schema and channel records a damaged chunk still holds (later chunks need them)."""
    try:
        records = _chunk_records(content, check=False)
    except Exception:  # noqa: BLE001 - as above
        return b""
    return b"".join(r for op, r in _walk(records) if op in (_OP_SCHEMA, _OP_CHANNEL))


def salvage_mcap(src: Path, dst: Path, *, block: int = 1 << 20) -> Salvage:
    """Copy the sound records of a damaged MCAP ``src`` into a valid MCAP ``dst``.

    Records are copied byte for byte (chunks stay compressed) up to the first one that
    runs past the end of the file, or up to the data section's end if the cut fell in
    the summary.  A chunk that fails to decompress, its checksum or its records'
    framing is left out with its message indexes (its schemas and channels are kept).
    ``dst`` then gets a DataEnd record and a footer without a summary, which readers
    answer by scanning the data: what ``mcap recover`` does.
    """
    size = src.stat().st_size
    records = dropped = 0
    with src.open("rb") as f, dst.open("wb") as out:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise BagError(f"{src}: not an MCAP file (bad magic)")
        out.write(MCAP_MAGIC)
        kept = f.tell()
        skipping_indexes = False
        while True:
            frame = f.read(_RECORD.size)
            if len(frame) < _RECORD.size:
                break
            op, length = _RECORD.unpack(frame)
            if op in (_OP_DATA_END, _OP_FOOTER) or kept + _RECORD.size + length > size:
                break
            kept += _RECORD.size + length
            if op == _OP_CHUNK:  # read whole to check it: chunks are ~1 MiB
                content = f.read(length)
                skipping_indexes = not _chunk_is_sound(content)
                if skipping_indexes:
                    dropped += 1
                    out.write(_definitions_in(content))
                    continue
                out.write(frame + content)
            elif op == _OP_MESSAGE_INDEX and skipping_indexes:
                f.seek(length, os.SEEK_CUR)
                continue
            else:
                skipping_indexes = False
                out.write(frame)
                left = length
                while left:
                    piece = f.read(min(block, left))
                    out.write(piece)
                    left -= len(piece)
            records += 1
        out.write(_RECORD.pack(_OP_DATA_END, 4) + struct.pack("<I", 0))  # no data CRC: 0 means unset
        out.write(_RECORD.pack(_OP_FOOTER, 20) + struct.pack("<QQI", 0, 0, 0) + MCAP_MAGIC)
    return Salvage(src, kept, size, records, dropped, cut_short=mcap_is_cut_short(src))


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
    """Copy every readable message of a cut-short or damaged rosbag2 ``.db3`` into ``dst``.

    A copy of ``src`` is trimmed to whole pages and its header told the true page
    count, so SQLite reads what is there; tables and indexes are re-created in ``dst``
    from the file's own schema, the small tables copied whole, and ``messages`` row by
    row in id order: a row whose pages are damaged or past the cut fails alone, and
    the search ends after a run of failures past the largest id the table still knows.
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
        records, dropped = _copy_db3(trimmed, dst, src)
    finally:
        trimmed.unlink(missing_ok=True)
    return Salvage(src, pages * page_size, size, records, dropped, cut_short=db3_is_cut_short(src))


def _columns_and_insert(db: sqlite3.Connection, table: str) -> tuple[str, str]:
    """``table``'s column list and an INSERT statement taking a row of them."""
    names = [f'"{c[1]}"' for c in db.execute(f'PRAGMA table_info("{table}")')]
    return ", ".join(names), f'INSERT INTO "{table}" ({", ".join(names)}) VALUES ({", ".join("?" * len(names))})'


def _id_bound(db: sqlite3.Connection, query: str, default: int) -> int:
    """``min(id)`` or ``max(id)`` of ``messages`` as far as its b-tree still says, else ``default``."""
    try:
        value = db.execute(query).fetchone()[0]
    except sqlite3.DatabaseError:
        return default
    return default if value is None else int(value)


def _copy_db3(old_path: Path, dst: Path, src: Path) -> tuple[int, int]:
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
        msg_id = _id_bound(old, "SELECT min(id) FROM messages", 1)
        last_id = _id_bound(old, "SELECT max(id) FROM messages", 0)  # 0: unknown, search by misses
        records = dropped = failed = misses = 0
        while misses < _DB3_MISSES_TO_STOP or msg_id <= last_id:
            try:
                row = old.execute(select, (msg_id,)).fetchone()
            except sqlite3.DatabaseError:
                row, failed = None, failed + 1
            if row is None:
                misses += 1
            else:
                new.execute(insert, row)
                records, misses, dropped, failed = records + 1, 0, dropped + failed, 0
            msg_id += 1
        new.commit()
        return records, dropped
    finally:
        old.close()
        new.close()
