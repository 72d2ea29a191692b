"""Loading saved models from local directories only, and only when the weights fill the whole model."""

from __future__ import annotations

import json
import os
import re
import shutil
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from adaworld_gym.data.episodes import swap_in_directory

__all__ = ["CheckedLoadingMixin", "directory_digest", "model_fingerprint", "saved_model_dir"]

_LOADING_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
SAFETENSORS_WEIGHTS = "diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes


def _innermost(err: BaseException) -> str:
    """The deepest error in ``err``'s chain that names the reader (safetensors), else the deepest of all."""
    chain_, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain_.append(err)
        err = err.__cause__ or err.__context__
    named = [e for e in chain_ if "safetensor" in type(e).__name__.lower()]
    found = (named or chain_)[-1]
    return f"{type(found).__name__}: {found}"


def _check_config_fields(
    cls: type, config: dict[str, Any], config_file: Path, overrides: dict[str, Any]
) -> None:
    """Refuse config fields of another type than their constructor default's, and warn about missing ones.

    diffusers passes JSON values on as they are, so ``"action_agnostic": "no"`` built a model that ignores its
    actions (a non-empty string is true), and a missing field silently took the constructor's default.
    """
    import inspect
    import math
    import warnings

    missing = []
    parameters = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [] if takes_any else sorted(k for k in config if not k.startswith("_") and k not in parameters)
    if unknown:  # a typo ("regulariser") would leave the real field at its default, and be saved again
        warnings.warn(
            f"{config_file} has fields {cls.__name__} does not take: {', '.join(unknown)} (ignored; a typo?)",
            stacklevel=3,
        )
    for name, param in parameters.items():
        default = param.default
        if name == "self" or name in overrides or default is inspect.Parameter.empty:
            continue
        if name not in config:
            missing.append(f"{name}={default!r}")
            continue
        value = config[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int | float) and value is not None:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (isinstance(value, int) or isinstance(default, float))
        else:
            continue
        if not ok:
            kind = "true or false" if isinstance(default, bool) else f"a finite {type(default).__name__}"
            raise ValueError(f"{config_file}: {name} must be {kind}, got {value!r}")
    if missing:
        warnings.warn(
            f"{config_file} lacks {', '.join(missing)}: the defaults are used (a config saved by older code, or "
            "an edited one)",
            stacklevel=3,
        )


class CheckedLoadingMixin:
    """``from_pretrained`` for a directory written by ``save_pretrained``, with errors that name the problem.

    Put it before diffusers' ``ModelMixin`` in the bases. It refuses, before or instead of what diffusers does:
    a directory that does not exist (diffusers would try the Hugging Face hub; this package never downloads),
    a missing or unreadable ``config.json``, a config saved by another model class, a directory without
    safetensors weights (diffusers would fall back to unpickling a ``.bin`` file; nothing is ever unpickled
    here), weights that do not cover every parameter (diffusers only logs a warning and leaves those
    parameters empty on the ``meta`` device, which fails much later), and weights holding NaN or inf.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        path = Path(os.fspath(pretrained_model_name_or_path)) / (kwargs.get("subfolder") or "")
        if not path.is_dir():
            raise FileNotFoundError(f"model directory not found: {path}")
        config_file = path / cls.config_name  # type: ignore[attr-defined]
        if not config_file.is_file():
            raise FileNotFoundError(f"not a saved {cls.__name__}: {config_file} is missing")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            class_name = config.get("_class_name")
        except (ValueError, AttributeError) as err:
            raise ValueError(f"{config_file} is not a valid model config: {err}") from err
        if class_name != cls.__name__:
            raise ValueError(
                f"{config_file} describes a {class_name!r}, not a {cls.__name__}: mismatched checkpoint"
            )
        _check_config_fields(cls, config, config_file, overrides=kwargs)
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(
                f"no safetensors weights in {path} (expected {SAFETENSORS_WEIGHTS}); other weight formats are "
                "refused, since loading them would unpickle"
            )
        if kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False is refused: weights are only read from safetensors")
        kwargs["use_safetensors"] = True
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(  # type: ignore[misc]
                os.fspath(pretrained_model_name_or_path), output_loading_info=True, **kwargs
            )
        except TypeError as err:  # e.g. "num_history": "four" failed deep in the constructor, naming no file
            raise ValueError(
                f"could not build a {cls.__name__} from {config_file} (a field of the wrong type?): {err}"
            ) from err
        except ValueError as err:  # a field out of range, or weights of another shape than the config says
            # diffusers' advice (random weights in place of the mismatched ones) does not apply; nor its empty name
            text = str(err).split(" If you want to instead overwrite")[0].replace("Cannot load  because ", "")
            if "expected shape" in text:
                raise ValueError(
                    f"{path}: the weights do not fit the {cls.__name__} of {config_file}: {text}"
                ) from err
            raise ValueError(f"{config_file}: {text}") from err
        except OSError as err:  # diffusers names the file but buries why (a truncated file, a bad header)
            raise OSError(f"{path}: cannot read the weights: {_innermost(err)}") from err
        problems = {key: info[key] for key in _LOADING_PROBLEMS if info.get(key)}
        empty = [name for name, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
        if problems or empty:
            found = "; ".join(f"{key}: {value}" for key, value in problems.items())
            if empty:
                found += f"{'; ' if found else ''}left empty: {empty[:8]}{' ...' if len(empty) > 8 else ''}"
            raise ValueError(f"{path}: the weights do not fit the {cls.__name__} of its config ({found})")
        bad = [
            n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()
        ]
        if bad:  # a model that would pay or predict NaN: refuse it here, not steps later
            raise ValueError(
                f"{path}: NaN or inf in the weights ({', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''})"
            )
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """diffusers' ``save_pretrained``, written atomically and without an earlier save's stale weight files.

        The save goes to a side directory, which then replaces ``save_directory`` whole, so a kill leaves the
        old save or the new one, never new weights beside an old config. What the directory held besides the
        weights (notes, other variants) is carried over, as diffusers would leave it. diffusers deletes an
        earlier save's stale shards but not its shard index: saving unsharded over a sharded save left an index
        naming deleted files, and the directory no longer loaded; saving sharded over an unsharded save left
        the old single file next to the new shards.
        """
        _plain_config(self)
        if kwargs.get("safe_serialization", args[2] if len(args) > 2 else True) is False:
            # a pickle (.bin) that from_pretrained refuses to read: the save would replace a loadable model
            raise ValueError("safe_serialization=False is refused: weights are only written as safetensors")
        is_main = kwargs.get("is_main_process", args[0] if args else True)
        if not is_main or kwargs.get("push_to_hub"):  # nothing written here, or diffusers' hub upload
            super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
            return
        target = Path(os.fspath(save_directory)).resolve()
        if target.exists() and not target.is_dir():
            raise FileExistsError(f"cannot save a model to {target}: it is a file")
        side = target.with_name(f".{target.name}-tmp")
        shutil.rmtree(side, ignore_errors=True)
        try:
            try:
                super().save_pretrained(side, *args, **kwargs)  # type: ignore[misc]
            except SafetensorError as e:  # a full disk, say: an OSError, as other writes give
                raise OSError(f"cannot save a model to {target}: {e}") from e
            replaced = _replaced_weights(kwargs.get("variant", args[3] if len(args) > 3 else None))
            for entry in target.iterdir() if target.is_dir() else ():
                if not (side / entry.name).exists() and not replaced.fullmatch(entry.name):
                    _carry(entry, side / entry.name)
            _drop_stale_weights(side)
            swap_in_directory(side, target)
        except BaseException:
            shutil.rmtree(side, ignore_errors=True)
            raise


def _replaced_weights(variant: str | None) -> re.Pattern[str]:
    """An earlier save's weight files that a save of ``variant`` replaces: its single file and shards (diffusers
    deletes such shards itself); other variants' files stay."""
    tag = rf"\.{re.escape(variant)}" if variant else ""
    return re.compile(rf"diffusion_pytorch_model(-\d{{5}}-of-\d{{5}})?{tag}\.(safetensors|bin)")


def _carry(entry: Path, dest: Path) -> None:
    """Carry a file or folder of the old save into the new one: hard links where possible (a run folder's
    checkpoints are not copied on every save), links kept as links."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(src, dst)

    if entry.is_symlink():
        os.symlink(os.readlink(entry), dest)
    elif entry.is_dir():
        shutil.copytree(entry, dest, symlinks=True, copy_function=link_or_copy)
    else:
        link_or_copy(str(entry), str(dest))


def _drop_stale_weights(directory: Path) -> None:
    for index in directory.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not diffusers' index: leave it alone
        if all((directory / shard).is_file() for shard in shards):
            # The shards just written: the single file of the same name is from an earlier save.
            (directory / index.name.removesuffix(".index.json")).unlink(missing_ok=True)
        else:  # diffusers removed the shards it names: this save was unsharded
            index.unlink()


def saved_model_dir(path: str | os.PathLike) -> Path:
    """Where the saved model at ``path`` lives: ``path`` itself, or ``path/model`` for a training run's directory
    (``path`` unchanged when neither holds a ``config.json``: the caller names what is missing)."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        return path / "model"
    return path


DIGEST_SUFFIXES = (".safetensors", ".json", ".npy")  # what decides a saved model's or bundle's behaviour


def directory_digest(*dirs: str | os.PathLike, weights_only: bool = False) -> str:
    """SHA-256 over the weights, configs and arrays under ``dirs`` (by relative path), for provenance checks.

    Benchmarks record it next to a result and reuse the result only when it matches, so a path whose contents
    changed (a retrained model behind the same name) is never mistaken for the one that was measured.
    A model's training run directory is hashed as its ``model/`` folder. ``weights_only``: hash ``config.json``
    and the safetensors files only, not a LAM's latent options (notes such as ``train_summary.json`` and the
    options that ``adaworld cluster`` stores beside a LAM may change without the model changing).
    """
    import hashlib

    from adaworld_gym.data.episodes import sha256_file
    from adaworld_gym.latent import OPTIONS_FILE  # `adaworld cluster`'s options: derived from the weights

    digest = hashlib.sha256()
    for root in map(Path, dirs):
        root = saved_model_dir(root)
        if not root.is_dir():
            raise FileNotFoundError(f"cannot fingerprint {root}: not a directory")
        # Hidden entries are skipped below the root only: a root reached through ".." (a bundle's shared model,
        # "bundle/../../world_model") or inside a hidden folder (~/.cache) would otherwise hash no files at all.
        files = sorted(
            p for p in root.rglob("*")
            if p.is_file() and p.suffix in DIGEST_SUFFIXES
            and (not weights_only or p.name == "config.json" or (".safetensors" in p.name and p.name != OPTIONS_FILE))
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )  # fmt: skip
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of one saved model's settings and weights: its config without diffusers' own ``_``-keys (a copy
    re-saved elsewhere, such as a bundle's, changes those and not the model) and its safetensors files, not the
    control options ``adaworld cluster`` stores beside a LAM. ``path``: the model's directory or the training run
    directory holding it in ``model/``.

    The one fingerprint of a frozen model: a world model's ``lam.json`` records its LAM's, and a training run's
    checkpoints record the LAM (and pretrained model) they learn from, so the two agree for one LAM.
    """
    import hashlib

    from adaworld_gym.data.episodes import sha256_file
    from adaworld_gym.latent import OPTIONS_FILE

    root = saved_model_dir(path)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"cannot fingerprint {root}: no saved model there (config.json missing)")
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"unreadable {root / 'config.json'}: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{root / 'config.json'} is not a model config (a JSON object)")
    digest = hashlib.sha256(
        json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, sort_keys=True).encode()
    )
    for weights in sorted(root.glob("*.safetensors")):
        if weights.name != OPTIONS_FILE:
            digest.update(sha256_file(weights).encode())
    return digest.hexdigest()


def _plain_config(model: Any) -> None:
    """Numpy numbers in ``model.config`` as Python ones: diffusers records the constructor's arguments as given
    (``num_history=np.int64(2)`` from a sweep, a Gymnasium size) and its JSON writer fails on them at save."""
    from diffusers.configuration_utils import FrozenDict

    def plain(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return value

    config = dict(model._internal_dict)
    converted = {key: plain(value) for key, value in config.items()}
    if converted != config or any(type(converted[k]) is not type(config[k]) for k in config):
        model._internal_dict = FrozenDict(converted)
