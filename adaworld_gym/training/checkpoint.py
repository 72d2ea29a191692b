"""Atomic, resumable training checkpoints that never unpickle.

A checkpoint is a directory ``<root>/step-<N>/`` holding

- ``tensors.safetensors``: every tensor of the training state (model, optimizer moments, RNG states, ...);
- ``state.json``: everything else (step, scalars, optimizer structure), with tensors replaced by references
  into the safetensors file, plus a SHA-256 of the safetensors file so silent corruption is caught.

The training state is any nesting of dicts, lists, tuples, tensors, numpy arrays and JSON scalars, e.g.
``{"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
"step": 123, "rng": capture_rng_state()}``. :func:`flatten_state` / :func:`unflatten_state` do the conversion.

Saving writes into a hidden temporary directory next to the final one and renames it into place with
``os.replace`` (atomic on POSIX), so a kill at any moment leaves the previous checkpoints intact. The newest
``keep`` checkpoints are kept (2 by default: the latest and the one before it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from adaworld_gym.data.episodes import UMASK, fsync_path, sha256_file

FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# numpy dtypes torch cannot hold are stored bit-for-bit as a same-width signed type.
_NUMPY_VIEW = {np.dtype("uint16"): np.int16, np.dtype("uint32"): np.int32, np.dtype("uint64"): np.int64}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or corrupt; the message names the file."""


# ----------------------------------------------------------------------------------------- state <-> files
def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON-serialisable structure and a flat dict of tensors.

    Tensors become ``{"__tensor__": key}``, numpy arrays ``{"__ndarray__": key, "dtype": ...}``, tuples
    ``{"__tuple__": [...]}`` and dicts with non-string keys ``{"__dict__": [[key, value], ...]}`` so that
    optimizer state dicts (integer keys, tuple betas) round-trip exactly.
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(obj: Any, path: str) -> Any:
        if isinstance(obj, (torch.Tensor, np.ndarray)) and path in tensors:
            # keys 0 and "0", or "a/b" beside {"a": {"b": ...}}: one tensor would silently replace the other
            raise ValueError(f"two entries of the state map to the tensor name {path!r}")
        if isinstance(obj, torch.Tensor):
            # Clone: safetensors refuses tensors sharing storage (tied weights, views).
            tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
            return {"__tensor__": path}
        if isinstance(obj, np.ndarray):
            arr = obj.view(_NUMPY_VIEW[obj.dtype]) if obj.dtype in _NUMPY_VIEW else obj
            tensors[path] = torch.from_numpy(np.ascontiguousarray(arr).copy())
            return {"__ndarray__": path, "dtype": obj.dtype.str}
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: encode(v, f"{path}/{k}") for k, v in obj.items()}
            return {"__dict__": [[k, encode(v, f"{path}/{k}")] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [encode(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [encode(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store {type(obj).__name__} at {path!r} in a checkpoint")

    return encode(state, ""), tensors


def unflatten_state(structure: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def decode(obj: Any) -> Any:
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            dtype = np.dtype(obj["dtype"])
            return tensors[obj["__ndarray__"]].numpy().view(dtype).copy()
        if "__tuple__" in obj:
            return tuple(decode(v) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {_key(k): decode(v) for k, v in obj["__dict__"]}
        return {k: decode(v) for k, v in obj.items()}

    return decode(structure)


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k  # JSON turns tuple keys into lists


# ------------------------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, numpy's and torch's global generators (CPU, plus CUDA when available)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 -- the legacy global RNG is what libraries seed
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators captured by :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ------------------------------------------------------------------------------------------------ save / load
def save_checkpoint(root: str | os.PathLike, step: int, state: Mapping[str, Any], keep: int = 2) -> Path:
    """Atomically write ``state`` as ``<root>/step-<step>/`` and prune all but the newest ``keep`` checkpoints.

    Returns the path of the new checkpoint directory.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:09d}"
    structure, tensors = flatten_state(dict(state))
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        tensor_path = tmp / TENSORS_FILE
        try:
            save_file(tensors, str(tensor_path))
        except SafetensorError as e:  # a full disk, say: an OSError, as other writes give
            raise OSError(f"cannot write checkpoint {final}: {e}") from e
        fsync_path(tensor_path)
        manifest = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "sha256": {TENSORS_FILE: sha256_file(tensor_path), "state": _structure_digest(structure)},
            "state": structure,
        }
        state_path = tmp / STATE_FILE
        state_path.write_text(json.dumps(manifest), encoding="utf-8")
        fsync_path(state_path)
        # mkdtemp makes 0700 directories and safetensors 0600 files: a collaborator could not read or resume
        # the run; give them the permissions every other write gets.
        os.chmod(tmp, 0o777 & ~UMASK)
        os.chmod(tensor_path, 0o666 & ~UMASK)
        if final.exists():  # re-saving the same step: move the old one aside first
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(root)
    others = [c for c in list_checkpoints(root) if c != final]
    for old in others[: max(0, len(others) - (keep - 1))]:  # the newest keep - 1 others stay beside this one
        _remove(old)
    for stale in root.glob(".tmp-*"):  # left over by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _structure_digest(structure: Any) -> str:
    return hashlib.sha256(json.dumps(structure, sort_keys=True).encode()).hexdigest()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint directory written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: a file is missing, truncated or fails its checksum (the message names the file).
    """
    path = Path(path)
    state_path, tensor_path = path / STATE_FILE, path / TENSORS_FILE
    for f in (state_path, tensor_path):
        if not f.is_file():
            raise CheckpointError(f"checkpoint file missing: {f}")
    try:
        manifest = json.loads(state_path.read_text(encoding="utf-8"))
        structure, expected = manifest["state"], manifest["sha256"][TENSORS_FILE]
    except FileNotFoundError as err:  # moved away since the check above (another process set it aside)
        raise CheckpointError(f"checkpoint file missing: {state_path}") from err
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"corrupt or truncated checkpoint file {state_path}: {err}") from err
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"unsupported checkpoint format {manifest.get('format_version')!r} in {state_path}"
        )
    try:
        digest = sha256_file(tensor_path)
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint file missing: {tensor_path}") from err
    if digest != expected:
        raise CheckpointError(f"corrupt or truncated checkpoint file {tensor_path}: checksum mismatch")
    # Steps, clocks, RNG and data positions live in the JSON: checked too (checkpoints before this had no digest).
    saved_digest = manifest["sha256"].get("state")
    if saved_digest is not None and _structure_digest(structure) != saved_digest:
        raise CheckpointError(f"corrupt checkpoint file {state_path}: checksum mismatch")
    named = _STEP_DIR.match(path.name)
    if named and int(named.group(1)) != manifest.get("step"):
        raise CheckpointError(
            f"{state_path} holds step {manifest.get('step')}, not the {path.name} it is named"
        )
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"corrupt or truncated checkpoint file {tensor_path}: {err}") from err
    try:
        return unflatten_state(structure, tensors)
    except KeyError as err:
        raise CheckpointError(
            f"checkpoint {state_path} refers to a tensor missing from {tensor_path}: {err}"
        ) from err


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest checkpoint directory under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------------- helpers
def _remove(path: Path) -> None:
    # Rename first (atomic) so a kill mid-deletion never leaves a half-deleted "step-N" directory behind.
    trash = path.with_name(f".tmp-del-{path.name}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
