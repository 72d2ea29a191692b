#!/usr/bin/env bash
# Set up everything adaworld-gym needs on a fresh Debian machine: the system rendering libraries
# (OSMesa/EGL for MuJoCo off-screen rendering), a virtual environment in .venv, pinned Python packages
# and the package itself (editable). Safe to run again: it reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then
  echo "[setup] needs Python 3.10-3.12 (3.11 is what the lock was made with); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

# System libraries for off-screen rendering. ldconfig lives in /sbin, which a non-root PATH may leave out.
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
if ! "$LDCONFIG" -p 2>/dev/null | grep -q libOSMesa || ! "$LDCONFIG" -p 2>/dev/null | grep -q libEGL.so.1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! command -v apt-get >/dev/null || { [ -n "$SUDO" ] && ! command -v sudo >/dev/null; }; then
    echo "[setup] install libosmesa6 libegl1 libgl1-mesa-dri as root (apt-get), then run this again" >&2
    exit 1
  fi
  echo "[setup] installing OSMesa/EGL rendering libraries"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libosmesa6 libegl1 libgl1-mesa-dri >/dev/null
fi

# A venv whose creation failed half-way (no ensurepip: Debian's python3-venv missing) has no pip: start over.
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "[setup] $VENV has no working pip; recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "[setup] could not create $VENV: on Debian install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
fi

stamp="$VENV/.adaworld-installed"
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned dependencies (requirements.lock)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # torch first and exactly: a looser spec would pull several GB of CUDA wheels. Where no CPU wheel is at hand
  # (this workplace keeps one in /opt/wheels), PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu gets it.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock
  # The editable build prints setuptools' notices; keep them in a log, show it only on failure.
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . >"$VENV/install.log" 2>&1; then
    cat "$VENV/install.log"; exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $VENV/bin/adaworld"
