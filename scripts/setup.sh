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

# System packages, only those missing: OSMesa/EGL and Mesa's DRI drivers (MuJoCo renders off-screen through
# EGL), venv support (ensurepip), and a compiler with Python and kernel headers: evdev (robosuite -> pynput) has
# no wheel for every platform and then builds from source.
PYVER=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
need=()
if command -v dpkg-query >/dev/null; then
  for pkg in libosmesa6 libegl1 libgl1-mesa-dri; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
else  # not Debian: look for the libraries themselves (ldconfig lives in /sbin, off a non-root PATH)
  libs=$("$(command -v ldconfig || echo /sbin/ldconfig)" -p 2>/dev/null || true)
  case "$libs" in *libOSMesa*) ;; *) need+=(libosmesa6) ;; esac
  case "$libs" in *libEGL.so.1*) ;; *) need+=(libegl1 libgl1-mesa-dri) ;; esac
fi
"$PYTHON" -c 'import ensurepip' 2>/dev/null || need+=("python$PYVER-venv")
command -v gcc >/dev/null || need+=(gcc)
"$PYTHON" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
  2>/dev/null || need+=("python$PYVER-dev")
[ -e /usr/include/linux/input.h ] || need+=(linux-libc-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  if ! command -v apt-get >/dev/null || { [ -n "$SUDO" ] && ! command -v sudo >/dev/null; }; then
    echo "[setup] install ${need[*]} as root (apt-get), then run this again" >&2
    exit 1
  fi
  echo "[setup] installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A venv without a working pip (creation failed half-way), whose interpreter is gone (an upgrade) or of
# another Python version: start over.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys, pip; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' \
    >/dev/null 2>&1; then
  echo "[setup] $VENV is broken or of another Python; recreating it"
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
