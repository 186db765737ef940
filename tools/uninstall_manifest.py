#!/usr/bin/env python3
"""Remove what the last ``cmake --install`` wrote into the venv, before installing again.

    python tools/uninstall_manifest.py build/cmake/install_manifest.txt .venv

CMake's install never deletes: a module removed from the source would stay in the venv
and could hide a broken import there. Only files the manifest lists and that lie inside
PREFIX are removed, then the directories that held them if that left them empty (an
empty egg-info directory reads to pip as a broken distribution).
"""

from __future__ import annotations

import sys
from pathlib import Path


def uninstall(manifest: Path, prefix: Path) -> int:
    """Remove the manifest's files under ``prefix`` and the directories they leave empty; returns the count."""
    root = prefix.resolve()
    removed = 0
    parents: set[Path] = set()
    for line in manifest.read_text().splitlines():
        path = Path(line.strip())
        if not line.strip() or not path.is_absolute() or not path.resolve().is_relative_to(root):
            continue
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed += 1
        parents.add(path.parent)
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):  # deepest first
        while folder != root and folder.is_relative_to(root) and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return removed


def main(argv: list[str]) -> int:
    """MANIFEST PREFIX; a missing manifest (no install yet) is nothing to do."""
    if len(argv) != 2:
        print("usage: uninstall_manifest.py MANIFEST PREFIX", file=sys.stderr)
        return 2
    manifest, prefix = Path(argv[0]), Path(argv[1])
    if manifest.is_file():
        uninstall(manifest, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
