"""tools/uninstall_manifest.py: what `make setup` removes of the last CMake install before the next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_removes_listed_files_inside_the_prefix_and_the_folders_they_empty(tmp_path: Path) -> None:
    venv, outside = tmp_path / "venv", tmp_path / "elsewhere.txt"
    site = venv / "lib" / "site-packages"
    egg = site / "pkg-0.1.egg-info"
    egg.mkdir(parents=True)
    (egg / "PKG-INFO").write_text("x")
    (site / "pkg").mkdir()
    (site / "pkg" / "old_module.py").write_text("x")
    (site / "pkg" / "not_ours.py").write_text("x")  # not in the manifest: stays, and so does its folder
    outside.write_text("keep")
    manifest = tmp_path / "install_manifest.txt"
    listed = [egg / "PKG-INFO", site / "pkg" / "old_module.py", outside, venv / "gone.txt"]
    manifest.write_text("\n".join(map(str, listed)))  # CMake writes no final newline
    run = [sys.executable, str(REPO / "tools" / "uninstall_manifest.py"), str(manifest), str(venv)]
    assert subprocess.run(run, check=False).returncode == 0
    assert not egg.exists()  # an empty egg-info folder would read to pip as a broken distribution
    assert not (site / "pkg" / "old_module.py").exists() and (site / "pkg" / "not_ours.py").exists()
    assert outside.read_text() == "keep" and venv.is_dir() and site.is_dir()
    # No manifest yet (a first set-up): nothing to do.
    assert subprocess.run([*run[:2], str(tmp_path / "none.txt"), str(venv)], check=False).returncode == 0
