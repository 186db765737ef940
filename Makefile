# Panoptic-DepthLab: one-command set-up, tests and demo.
#   make setup   .venv with torch (CPU), ROS 2 Jazzy wheels, our messages and packages
#   make test    setup, lint (ruff, ruff format --check, mypy), then the whole suite
#   make demo    setup, then the node on the bundled demo bag -> demo_output/
# Every step is a file target: a second run skips finished steps, a changed
# source re-installs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
BUILD_DIR := build/cmake
# A child of another ROS-wheel venv would inherit the bootstrapper's guard and
# skip setting up this venv's library path.
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export CMAKE_PREFIX_PATH := $(CURDIR)/$(VENV)

DEPS_STAMP := $(VENV)/.stamp-deps
BUILD_STAMP := $(VENV)/.stamp-build
CORE_FILES := $(shell find panoptic_depthlab_ros -type f -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)
TRAINING_FILES := $(shell find training -type f \( -name '*.py' -o -name '*.toml' \) -not -path '*/__pycache__/*' 2>/dev/null)
PACKAGE_FILES := CMakeLists.txt package.xml setup.py pyproject.toml $(wildcard msg/*.msg scripts/*.in) \
	$(shell find launch config rviz -type f 2>/dev/null)

.PHONY: help setup test lint demo clean
help:
	@echo "make setup | make test | make demo | make lint | make clean"

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q -U "pip>=24"

$(DEPS_STAMP): requirements.txt tools/fix_ros_cmake_paths.sh | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	tools/fix_ros_cmake_paths.sh $(VENV)
	tools/venv_activate_hook.sh $(VENV)
	touch $@

# Core: pip (metadata, so the training package's dependency is satisfied),
# then CMake on top: messages + node into the same package directory; last, the
# compiled post-processing in place too, for the tests and tools run from the
# sources. CMake's install never deletes: the files its last install wrote (its manifest) go first,
# so that a module removed from the source cannot linger in .venv and hide a
# broken import.
$(BUILD_STAMP): $(DEPS_STAMP) $(PACKAGE_FILES) $(CORE_FILES) $(TRAINING_FILES)
	$(PY) tools/uninstall_manifest.py $(BUILD_DIR)/install_manifest.txt $(VENV)
	rm -rf build/lib build/lib.* build/bdist.*  # pip builds in the tree: no module removed from the sources in its wheel
	$(PY) -m pip install -q --no-deps --no-build-isolation .
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
	  -DCMAKE_PREFIX_PATH=$(CURDIR)/$(VENV) -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(VENV) \
	  -DPython3_EXECUTABLE=$(CURDIR)/$(PY) > $(BUILD_DIR).log 2>&1 || { cat $(BUILD_DIR).log; exit 1; }
	cmake --build $(BUILD_DIR) -j 2 >> $(BUILD_DIR).log 2>&1 || { tail -50 $(BUILD_DIR).log; exit 1; }
	cmake --install $(BUILD_DIR) >> $(BUILD_DIR).log 2>&1 || { tail -50 $(BUILD_DIR).log; exit 1; }
	$(PY) -m pip install -q --no-deps --no-build-isolation -e training
	$(PY) setup.py -q build_ext --inplace > $(BUILD_DIR)-native.log 2>&1 || { cat $(BUILD_DIR)-native.log; exit 1; }
	touch $@

setup: $(BUILD_STAMP)

test: setup lint
	$(PY) -m pytest

# The main job on the bundled default: the real node on the demo bag -> demo_output/.
demo: setup
	$(PY) tools/demo.py --bag data/demo_bag --out demo_output

# Linter, formatter check and type check on the core and training packages and the tools.
lint: setup
	$(PY) -m ruff check panoptic_depthlab_ros training bench test launch tools
	$(PY) -m ruff format --check panoptic_depthlab_ros training bench test tools
	$(PY) -m mypy panoptic_depthlab_ros training/panoptic_depthlab_training tools

clean:
	rm -rf build $(VENV) *.egg-info training/*.egg-info
