"""pip install of the ROS-free core (model, checkpoints, post-processing,
predictor, visualization, CLI) for machines without ROS, e.g. a training server.

ROS users build this directory with colcon instead (package.xml + CMakeLists.txt),
which also generates the messages and installs the node.
"""
import os

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# The compiled per-pixel passes of the CPU post-processing (loaded with ctypes by
# panoptic_depthlab_ros/native.py, not imported: no Python API inside). The flags are
# CMakeLists.txt's too. Optional: without a C++ compiler the install goes on and the
# post-processing runs as torch ops (slower, same results).
NATIVE = Extension(
    "panoptic_depthlab_ros.lib.libpdl_postprocess",  # panoptic_depthlab_ros/lib/: no package, nothing imports it
    sources=["panoptic_depthlab_ros/csrc/postprocess.cpp"],
    extra_compile_args=["-std=c++17", "-O3", "-fno-trapping-math"],
    language="c++",
    optional=True,
)


class BuildNative(build_ext):
    """Names the library as native.py loads it (``libpdl_postprocess.so``): not as a Python
    extension module, which it is not (there is no Python API inside)."""

    def get_ext_filename(self, fullname: str) -> str:
        *package, name = fullname.split(".")  # called with the full name and with the last part
        if name == NATIVE.name.rsplit(".", 1)[-1]:
            return os.path.join(*package, name + ".so")
        return super().get_ext_filename(fullname)


setup(
    name="panoptic-depthlab-ros",
    version="0.1.0",
    description="Panoptic segmentation with metric depth per segment (Panoptic-DeepLab + depth branch)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["panoptic_depthlab_ros", "panoptic_depthlab_ros.*"]),
    package_data={"panoptic_depthlab_ros": ["data/*"]},
    ext_modules=[NATIVE],
    cmdclass={"build_ext": BuildNative},
    # The message definitions, where the ROS-free bag tools look for them (as colcon installs them).
    data_files=[("share/panoptic_depthlab_ros/msg", ["msg/SegmentDepth.msg", "msg/SegmentDepthArray.msg"])],
    install_requires=[
        "torch>=2.3",
        "numpy>=1.26",
        "opencv-python-headless>=4.8",
        "pillow>=9",  # image headers read before decoding (sizes checked against the pixel limit)
        "safetensors>=0.4",
        "pyyaml>=6",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "scipy>=1.11",
    ],
    # onnx: export and the onnxruntime backend (and --int8); openvino: the OpenVINO backend of an export.
    extras_require={
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
        "openvino": ["onnx>=1.16", "openvino>=2024.0"],
    },
    entry_points={"console_scripts": ["panoptic-depthlab=panoptic_depthlab_ros.cli:main"]},
)
