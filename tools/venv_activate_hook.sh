#!/usr/bin/env bash
# Make `source .venv/bin/activate` all a shell needs: the venv root is an ament
# prefix (messages, node, ament index), so point the ROS variables at it.
set -euo pipefail
venv=${1:?usage: venv_activate_hook.sh VENV}
act="$venv/bin/activate"
grep -q 'panoptic-depthlab ROS environment' "$act" && exit 0
cat >> "$act" <<'HOOK'

# --- panoptic-depthlab ROS environment (added by make setup) ---
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export ROS_DISTRO=jazzy
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
HOOK
