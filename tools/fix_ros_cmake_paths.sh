#!/usr/bin/env bash
# The ros-jazzy-* wheels' *__rosidl_generator_pyExport.cmake files hard-code the
# wheel builder's Python and numpy include dirs (/opt/python/cp3XX-cp3XX/...);
# CMake then refuses the imported targets ("includes non-existent path").
# Point them at this venv's headers.  Idempotent; rerun after any pip install
# that (re)installs ROS message wheels.
set -euo pipefail
venv=${1:?usage: fix_ros_cmake_paths.sh VENV}
py="$venv/bin/python"
pyinc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
npinc=$("$py" -c "import numpy; print(numpy.get_include())")
# grep finds nothing once the files are fixed (exit 1): that is success here.
{ grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$venv/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i -E \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$npinc#g" \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$pyinc#g"
