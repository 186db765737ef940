"""Declared dependencies: every import the runtime makes is declared, and the README installs work.

* setup.py ``install_requires`` (pip users), ``package.xml`` (rosdep) and
  ``requirements-runtime.txt`` (what rosdep cannot install) name the same runtime packages.
* Every third-party module the core, the node and the launch file import is declared there;
  ROS modules only under ``ros/`` (and the launch file), training-only libraries nowhere.
* ``ros/`` holds ROS code only (each of its modules imports ROS), and the core never imports
  ``ros/``: data flows from the core to the node, never back.  Tools that drive the node as a
  ROS client (``tools/demo.py``) live outside the package.
* The README's "pip users without ROS" block, run as it stands in a new venv on a copy of the
  package sources, installs the core from its declared dependencies alone and runs
  ``panoptic-depthlab info`` and ``infer`` on the bundled model.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from pdl_testing import REPO

CORE = REPO / "panoptic_depthlab_ros"

# Python distributions the runtime needs, with the rosdep key that installs each on Jazzy
# (Ubuntu 24.04), or None where no key resolves there (checked in ros/rosdistro's
# rosdep/python.yaml: no python3-torch for noble, no safetensors or rosbags keys at all).
ROSDEP_KEYS: dict[str, str | None] = {
    "torch": None,
    "numpy": "python3-numpy",
    "opencv-python-headless": "python3-opencv",
    "pillow": "python3-pil",
    "scipy": "python3-scipy",
    "safetensors": None,
    "pyyaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "rosbags": None,
}
# Import name -> distribution.
DISTRIBUTION = {
    "torch": "torch",
    "numpy": "numpy",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "scipy": "scipy",
    "safetensors": "safetensors",
    "yaml": "pyyaml",
    "tqdm": "tqdm",
    "rosbags": "rosbags",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
}
# Modules that come with ROS itself (declared in package.xml, importable only under ros/ and launch/).
ROS_MODULES = {
    "rclpy",
    "rcl_interfaces",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "diagnostic_msgs",
    "visualization_msgs",
    "nav_msgs",
    "lifecycle_msgs",
    "launch",
    "launch_ros",
    "ament_index_python",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement.strip(), maxsplit=1)[0].lower()


def _setup_kwargs() -> dict:
    """``install_requires`` and ``extras_require`` of setup.py, read without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}


def _package_xml_depends() -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for e in root if e.tag in ("depend", "exec_depend") and e.text}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names of absolute imports in ``path``: (at module level, inside functions)."""
    tree = ast.parse(path.read_text())
    module_level = {id(n) for n in tree.body}
    top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or root == "panoptic_depthlab_ros":
                continue
            (top if id(node) in module_level else nested).add(root)
    return top, nested


def test_install_requires_package_xml_and_requirements_agree() -> None:
    """Each runtime dependency is declared for pip users and for ROS users (rosdep, else pip)."""
    requires = {_name(r) for r in _setup_kwargs()["install_requires"]}
    assert requires == set(ROSDEP_KEYS), "setup.py install_requires and this table must list the same packages"
    depends = _package_xml_depends()
    python_keys = {d for d in depends if d.startswith("python3-")}
    assert python_keys == {k for k in ROSDEP_KEYS.values() if k}, "package.xml python3-* keys"
    lines = (REPO / "requirements-runtime.txt").read_text().splitlines()
    pip_file = {_name(line) for line in lines if line.split("#")[0].strip()}
    assert pip_file == {dist for dist, key in ROSDEP_KEYS.items() if key is None}
    # The README's ROS block installs exactly these: rosdep first, then that file.
    readme = (REPO / "README.md").read_text()
    assert "rosdep install --from-paths src --ignore-src -y" in readme
    assert "pip install -r src/panoptic_depthlab_ros/requirements-runtime.txt" in readme
    for dist in pip_file:
        assert f"**{dist}**" in readme, f"README does not say why rosdep cannot install {dist}"


def test_every_runtime_import_is_declared() -> None:
    requires = {_name(r) for r in _setup_kwargs()["install_requires"]}
    extras = {_name(r) for reqs in _setup_kwargs()["extras_require"].values() for r in reqs}
    depends = _package_xml_depends()
    problems = []
    files = sorted(CORE.rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    for path in files:
        rel = path.relative_to(REPO)
        top, nested = _imports(path)
        rosside = "ros" in rel.parts[:-1] or rel.parts[0] == "launch"
        for module in sorted(top | nested):
            if module in ROS_MODULES:
                if not rosside:
                    problems.append(f"{rel}: imports {module} outside ros/")
                elif module not in depends:
                    problems.append(f"{rel}: {module} is not in package.xml")
            elif module not in DISTRIBUTION:
                problems.append(f"{rel}: imports {module}, which no runtime declaration covers")
            elif DISTRIBUTION[module] not in requires and not (module in nested and DISTRIBUTION[module] in extras):
                problems.append(f"{rel}: {module} is neither required nor an optional extra imported on use")
    assert not problems, "\n".join(problems)


def _package_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (relative imports resolved), e.g. ``panoptic_depthlab_ros.ros.node``."""
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - node.level + 1]
            names = [".".join([*base, node.module])] if node.module else [".".join([*base, a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "panoptic_depthlab_ros"}
    return found


def test_ros_holds_ros_code_only_and_the_core_never_imports_it() -> None:
    problems = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(REPO)
        top, nested = _imports(path)
        if "ros" in rel.parts[:-1] and path.name != "__init__.py" and not (top & ROS_MODULES):
            problems.append(f"{rel}: imports no ROS module, so it belongs in the core, not in ros/")
        upward = sorted(m for m in _package_imports(path) if m.startswith("panoptic_depthlab_ros.ros"))
        if "ros" not in rel.parts[:-1] and upward:
            problems.append(f"{rel}: the core imports {', '.join(upward)}")
    assert not problems, "\n".join(problems)
    # The check itself sees relative imports (it once missed them all).
    assert "panoptic_depthlab_ros.pipeline" in _package_imports(CORE / "ros" / "node.py")


# ----------------------------------------------------------------------------- the README block
PIP_BLOCK_HEADING = "## pip users without ROS"


def readme_pip_block() -> list[str]:
    """The command lines of the README's first bash block under the pip users' heading."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(PIP_BLOCK_HEADING) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def _clean_env(python_dir: str) -> dict[str, str]:
    """A login-like environment: no venv, no ROS, no PYTHONPATH; pip's own settings kept."""
    keep = ("HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    env["PATH"] = os.pathsep.join(dict.fromkeys([python_dir, "/usr/local/bin", "/usr/bin", "/bin"]))
    return env


def _system_python() -> str | None:
    """The interpreter the README names, found outside this project's .venv."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return shutil.which("python3.11", path=path)


def _copy_sources(dst: Path) -> None:
    """What a clone holds for ``pip install .``: setup.py, pyproject.toml, msg/ and the package."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("msg", "panoptic_depthlab_ros"):
        shutil.rmtree(dst / name, ignore_errors=True)
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@pytest.mark.slow
def test_readme_pip_block_in_a_new_venv() -> None:
    """The README block, line by line, in a venv holding only what it installs.

    The venv is kept under build/ between runs, keyed by the declared dependencies and the
    block itself (a change to either builds it anew); each run re-installs the package from
    the current sources, so an import of something undeclared fails here.
    """
    python = _system_python()
    if python is None:
        pytest.fail("python3.11 is not on PATH outside .venv: the README's block cannot run")
    lines = readme_pip_block()
    assert lines[0].startswith("python3.11 -m venv venv")
    assert any(line.startswith("pip install torch==2.13.0 .") for line in lines)
    assert any(line.startswith("panoptic-depthlab info") for line in lines)
    assert any(line.startswith("panoptic-depthlab infer frame.png") for line in lines)
    key = hashlib.sha256(
        "\n".join([*lines, (REPO / "setup.py").read_text(), (REPO / "pyproject.toml").read_text(), python]).encode()
    ).hexdigest()[:16]
    work = REPO / "build" / "readme-venv"
    clone = work / key
    if not clone.exists():
        shutil.rmtree(work, ignore_errors=True)  # an older key: the declarations changed
        clone.mkdir(parents=True)
    _copy_sources(clone)
    shutil.rmtree(clone / "results", ignore_errors=True)
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(110, 40, (96, 192, 3)), 0, 255).astype(np.uint8)
    frame[60:, :] = (90, 90, 90)  # a road-coloured lower part
    cv2.imwrite(str(clone / "frame.png"), frame)
    # The block verbatim; then the venv must not hold the training package's dataset scripts.
    script = "\n".join(["set -eu", *lines, "python -c 'import cityscapesscripts' 2>/dev/null && exit 9", "exit 0"])
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=clone,
        env=_clean_env(str(Path(python).parent)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode != 9, "cityscapesscripts ended up in the core's venv"
    assert proc.returncode == 0, output[-4000:]
    assert "demo.safetensors" in proc.stdout and "classes: 19" in proc.stdout  # `info`
    assert "wrote 5 files for 1 frames" in proc.stdout  # `infer`
    for suffix in ("overlay.png", "depth.png", "depth.npy", "panoptic.png", "segments.json"):
        assert (clone / "results" / f"frame_{suffix}").is_file()
    print(f"README block in a venv: {seconds:.1f} s")
