#!/usr/bin/env bash
# Set up everything adaworld-gym needs on a fresh Debian machine: the system rendering libraries
# (OSMesa/EGL for MuJoCo off-screen rendering), a virtual environment in .venv, pinned Python packages
# and the package itself (editable). Safe to run again: it reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# System libraries for off-screen rendering.
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa || ! ldconfig -p 2>/dev/null | grep -q libEGL.so.1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "[setup] installing OSMesa/EGL rendering libraries"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libosmesa6 libegl1 libgl1-mesa-dri >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.adaworld-installed"
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned dependencies (requirements.lock)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # torch first and exactly: any looser spec would pull several GB of CUDA wheels.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock
  # The editable build prints setuptools' notices; keep them in a log, show it only on failure.
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . >"$VENV/install.log" 2>&1; then
    cat "$VENV/install.log"; exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $VENV/bin/adaworld"
