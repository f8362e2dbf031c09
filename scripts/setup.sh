#!/usr/bin/env bash
# Set up a fresh Debian machine (root) for napari-seamless: system libraries for napari under
# Xvfb (OpenGL via Mesa), the CPU build of PyTorch (pinned so pip never pulls the CUDA build),
# and the package with its napari and test extras (editable install).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  need=0
  for p in xvfb libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
           libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 libxcb-shape0 libdbus-1-3; do
    dpkg -s "$p" >/dev/null 2>&1 || need=1
  done
  if [ "$need" = 1 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq xvfb libgl1-mesa-dri libegl1 \
      libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 \
      libxcb-render-util0 libxcb-xinerama0 libxcb-shape0 libdbus-1-3 >/dev/null
  fi
fi
PY="${PYTHON:-python3}"
# torchvision (needed by smp/timm in the tests) pinned to the torch release, so pip never swaps torch
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "torch==2.13.0" "torchvision==0.28.0"
"$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[testing]" "torch==2.13.0" "torchvision==0.28.0"
