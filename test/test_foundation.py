"""The package shape: the core imports without ROS, and a colcon build of this
directory (the ROS users' path) installs messages, Python package, node and
launch/config files."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import panoptic_depthlab_ros
from pdl_testing import REPO


def _core_modules() -> list[str]:
    names = ["panoptic_depthlab_ros"]
    for info in pkgutil.walk_packages([str(REPO / "panoptic_depthlab_ros")], "panoptic_depthlab_ros."):
        if not info.name.startswith(("panoptic_depthlab_ros.ros", "panoptic_depthlab_ros.msg")):
            names.append(info.name)
    return names


def test_core_imports_with_rclpy_unimportable(tmp_path: Path) -> None:
    modules = _core_modules()
    assert "panoptic_depthlab_ros.cli" in modules
    # sys.modules[name] = None makes `import name` raise ImportError.
    code = (
        "import sys\n"
        "for m in ('rclpy', 'rosidl_runtime_py', 'sensor_msgs', 'std_msgs', 'geometry_msgs'):\n"
        "    sys.modules[m] = None\n"
        "import importlib\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert sys.modules['rclpy'] is None\n"
        "print('ok', len(sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_rclpy_really_unimportable_that_way() -> None:
    # Guards the test above: the sys.modules trick does block the import.
    code = "import sys; sys.modules['rclpy'] = None\ntry:\n import rclpy\nexcept ImportError:\n print('blocked')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "blocked"


def test_source_tree_package_sees_generated_messages() -> None:
    # Run from a checkout, the package __path__ spans the source tree and the
    # installed generated code.
    assert Path(panoptic_depthlab_ros.__path__[0]) == REPO / "panoptic_depthlab_ros"
    from panoptic_depthlab_ros import msg

    assert hasattr(msg, "SegmentDepthArray")


_COPY_IGNORE = shutil.ignore_patterns(
    ".venv",
    "build",
    "install",
    "log",
    ".git",
    "__pycache__",
    "*.egg-info",
    "demo_output",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "training",
    "bench",
    "test",
)


def test_colcon_build_install_space(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(REPO, ws / "src" / "panoptic_depthlab_ros", ignore=_COPY_IGNORE)
    venv = Path(sys.prefix)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    build = subprocess.run(
        [
            str(venv / "bin" / "colcon"),
            "build",
            "--event-handlers",
            "console_direct-",
            "--cmake-args",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
        ],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]

    prefix = ws / "install" / "panoptic_depthlab_ros"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    pkg = site / "panoptic_depthlab_ros"
    for rel in ("__init__.py", "cli.py", "msg/__init__.py", "msg/_segment_depth.py", "ros/__init__.py"):
        assert (pkg / rel).is_file(), rel
    node = prefix / "lib" / "panoptic_depthlab_ros" / "panoptic_depthlab_node"
    assert node.is_file() and os.access(node, os.X_OK)
    assert node.read_text().splitlines()[0] == f"#!{sys.executable}"
    share = prefix / "share" / "panoptic_depthlab_ros"
    for rel in (
        "launch/panoptic_depthlab.launch.py",
        "config/panoptic_depthlab.yaml",
        "rviz/panoptic_depthlab.rviz",
        "package.xml",
        "msg/SegmentDepth.msg",
    ):
        assert (share / rel).is_file(), rel
    index = prefix / "share" / "ament_index" / "resource_index" / "packages" / "panoptic_depthlab_ros"
    assert index.is_file()

    # The installed package: our modules and the generated messages side by side.
    code = (
        "import panoptic_depthlab_ros, panoptic_depthlab_ros.cli\n"
        "from panoptic_depthlab_ros.msg import SegmentDepthArray, SegmentDepth\n"
        "m = SegmentDepthArray(segments=[SegmentDepth(label='car')])\n"
        "print(panoptic_depthlab_ros.__file__)\n"
    )
    run_env = dict(env, PYTHONPATH=str(site), LD_LIBRARY_PATH=f"{prefix / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=run_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(pkg / "__init__.py")
