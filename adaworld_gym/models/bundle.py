"""Everything a world-model environment needs, saved and loaded as one directory.

Layout of a bundle directory (written to a side directory, then renamed into place, so a kill never leaves
half a bundle)::

    bundle.json             format, package version, adapter class, action space, meta
    world_model/            DiffusionWorldModel (config.json + safetensors)
    adapter/                the action adapter (config.json + adapter.safetensors)
    lam/                    the LatentActionModel, when the bundle has one (config.json + safetensors)
    reward/                 the RewardHead, when the bundle has one (config.json + safetensors)
    initial_frames.npy      uint8 [N, k, 64, 64, 3] start contexts for reset (loaded with allow_pickle=False)

A bundle may share a model directory instead of copying it (``save_pretrained(..., shared={"world_model":
PATH})``): ``bundle.json`` then holds ``"shared": {"world_model": "<PATH relative to the bundle>"}`` and the
model is loaded from there, after checking that its files still have the fingerprint recorded at saving
(``"shared_digests"``). The shipped bundles share the package's world model and LAM this way, so seventeen
environments cost the repository a few adapters and start frames, not seventeen copies of the weights.

Example::

    >>> bundle = tiny_random_bundle("discrete")
    >>> bundle.action_space
    Discrete(4)
"""

from __future__ import annotations

import json
import os
import types
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from adaworld_gym._version import __version__
from adaworld_gym.models.adapters import (
    ActionCodebook,
    ActionMLP,
    LatentAdapter,
    LatentOptions,
    LatentPassthrough,
    load_adapter,
)
from adaworld_gym.models.latent_action import LatentActionModel, lam_preset
from adaworld_gym.models.loading import directory_digest
from adaworld_gym.models.reward import RewardHead
from adaworld_gym.models.world_model import DiffusionWorldModel, world_model_preset
from adaworld_gym.training.common import BUNDLE, save_model_atomic

__all__ = [
    "BUNDLE_FORMAT",
    "ActionSpaceMismatch",
    "AdaWorldBundle",
    "bundle_digest",
    "describe_space",
    "tiny_random_bundle",
]

BUNDLE_FORMAT = "adaworld-bundle/1"
BUNDLE_JSON = "bundle.json"
INITIAL_FRAMES = "initial_frames.npy"


def describe_space(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a Discrete or Box action space (for bundle.json and error messages)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    raise ValueError(f"unsupported action space {space}")


class ActionSpaceMismatch(ValueError):
    """A bundle adapted to another action space than the one asked for (``expected_action_space``)."""


def space_summary(description: Any) -> str:
    """A :func:`describe_space` dict (or anything else) in one short line: a Box's bounds as their range, not
    one float per dimension."""
    try:
        if description["type"] == "Box":
            low, high = np.min(description["low"]), np.max(description["high"])
            return f"Box({low:g}..{high:g}, shape {tuple(description['shape'])})"
        if description["type"] == "Discrete":
            return f"Discrete({description['n']})"
    except (TypeError, KeyError, ValueError):
        pass
    return f"{description!r:.120}"


@dataclass
class AdaWorldBundle:
    """A world model, its action adapter, start contexts and (optionally) the LAM that labelled its data.

    Args:
        lam: the frozen latent action model (None when not shipped; the env does not need it).
        world_model: the diffusion world model.
        adapter: maps the env's actions to ``z``; its ``action_space`` is the env's.
        initial_frames: uint8 ``[N, k, 64, 64, 3]`` start contexts, 1 <= k <= the model's ``num_history``.
        meta: free-form JSON-able provenance (data set, training steps, ...).
        reward_head: predicts reward and termination from (frame, next frame[, z]); None when not trained.
            Bundles saved before reward heads existed load with None.
        shared: component -> the model directory it was loaded from and is shared with (see the module
            docstring); :meth:`save_pretrained` keeps sharing them unless told otherwise.
    """

    lam: LatentActionModel | None
    world_model: DiffusionWorldModel
    adapter: LatentAdapter
    initial_frames: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    reward_head: RewardHead | None = None
    shared: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = self.initial_frames
        size = self.world_model.config.sample_size
        k = self.world_model.config.num_history
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            raise ValueError(
                f"initial_frames must be a uint8 numpy array, got {getattr(frames, 'dtype', frames)}"
            )
        if frames.ndim != 5 or frames.shape[2:] != (size, size, 3) or len(frames) < 1:
            raise ValueError(
                f"initial_frames must have shape [N>=1, k, {size}, {size}, 3], got {frames.shape}"
            )
        if not 1 <= frames.shape[1] <= k:
            raise ValueError(
                f"initial_frames hold {frames.shape[1]} frames per context; the model takes 1..{k}"
            )
        if self.adapter.latent_dim != self.world_model.config.action_dim:
            raise ValueError(
                f"adapter latent_dim {self.adapter.latent_dim} does not match the world model's "
                f"action_dim {self.world_model.config.action_dim}"
            )
        if self.lam is not None:
            lam = self.lam.config
            if lam.image_size != size or lam.latent_dim != self.world_model.config.action_dim:
                raise ValueError(
                    f"the LAM ({lam.image_size}x{lam.image_size} frames, latent_dim {lam.latent_dim}) does not "
                    f"fit the world model ({size}x{size} frames, action_dim {self.world_model.config.action_dim})"
                )
        if self.adapter.uses_motion:
            if self.lam is None:
                raise ValueError(
                    "the adapter takes the motion context, which the LAM computes: a bundle with this adapter "
                    "needs its LAM"
                )
            if self.lam.config.latent_dim != self.adapter.motion_dim:
                raise ValueError(
                    f"the adapter's motion_dim {self.adapter.motion_dim} does not match the LAM's latent_dim "
                    f"{self.lam.config.latent_dim}"
                )
        head = self.reward_head
        if head is not None:
            if head.config.image_size != size:
                raise ValueError(
                    f"reward head image_size {head.config.image_size} does not match the world model's {size}"
                )
            if head.config.latent_dim not in (0, self.adapter.latent_dim):
                raise ValueError(
                    f"reward head latent_dim {head.config.latent_dim} does not match the adapter's "
                    f"latent_dim {self.adapter.latent_dim} (train it with the LAM of this world model, or "
                    "without latent actions)"
                )

    @property
    def action_space(self) -> spaces.Space:
        return self.adapter.action_space

    def latents(self, actions: Any, history: np.ndarray, history_len: Any = None) -> np.ndarray:
        """The checked ``z [B, d]`` of a batch of actions taken after uint8 ``history`` ``[B, k, H, W, 3]``.

        The history matters only to an adapter that takes the motion context (it is computed from the last two
        frames of each window, ``history_len`` real frames each, right-aligned).
        """
        if not self.adapter.uses_motion:
            return self.adapter.to_latent(actions)
        from adaworld_gym.latent import motion_context

        return self.adapter.to_latent(actions, motion_context(self.lam, history, history_len))

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        shared: Mapping[str, str | os.PathLike] | None = None,
    ) -> None:
        """Write the bundle directory atomically (see the module docstring for the layout).

        Args:
            directory: where the bundle goes.
            shared: component (``"world_model"``, ``"lam"``, ``"reward"``) -> a model directory holding exactly
                this bundle's weights for it; the bundle refers to that directory (by a relative path) instead
                of copying it. ``ValueError`` if the weights there differ from the bundle's. Default: what
                the bundle was loaded sharing (``self.shared``); ``{}`` copies everything.
        """
        directory = Path(directory)
        shared = self.shared if shared is None else shared
        for (
            name,
            path,
        ) in shared.items():  # the swap-in replaces directory whole: what lies in it would be lost
            inside = Path(path).resolve()
            if inside == directory.resolve() or directory.resolve() in inside.parents:
                raise ValueError(
                    f"cannot share {name!r} from {path}: it lies in {directory}, which this save replaces; "
                    "share a model directory outside the bundle's, or pass shared={} to copy it"
                )
        refs = {name: self._shared_ref(name, Path(path), directory) for name, path in shared.items()}
        # Recorded so that loading notices a shared model retrained in place (the adapter fits the old weights).
        digests = {name: directory_digest(path, weights_only=True) for name, path in shared.items()}
        # save_model_atomic writes into a side directory (a sibling, so relative refs hold) and swaps it in.
        writer = types.SimpleNamespace(save_pretrained=lambda d, **_: self._write(Path(d), refs, digests))
        save_model_atomic(writer, directory, kind=BUNDLE)

    def _components(self) -> dict[str, Any]:
        return {"world_model": self.world_model, "lam": self.lam, "reward": self.reward_head}

    def _shared_ref(self, name: str, path: Path, directory: Path) -> str:
        model = self._components().get(name)
        if model is None:
            raise ValueError(f"cannot share {name!r}: the bundle has no such component")
        other = _load_model(type(model), path, "cpu")
        ours, theirs = model.state_dict(), other.state_dict()
        if ours.keys() != theirs.keys() or any(not torch.equal(ours[k].cpu(), theirs[k]) for k in ours):
            raise ValueError(f"cannot share {name!r} with {path}: its weights differ from the bundle's")
        if _public(model.config) != _public(other.config):
            raise ValueError(f"cannot share {name!r} with {path}: its config differs from the bundle's")
        return Path(os.path.relpath(path.resolve(), directory.resolve())).as_posix()

    def _write(self, directory: Path, refs: Mapping[str, str], digests: Mapping[str, str]) -> None:
        directory.mkdir(parents=True)
        for name, model in self._components().items():
            if model is not None and name not in refs:
                model.save_pretrained(directory / name, safe_serialization=True)
        self.adapter.save_pretrained(directory / "adapter")
        np.save(directory / INITIAL_FRAMES, self.initial_frames, allow_pickle=False)
        header = {
            "format": BUNDLE_FORMAT,
            "version": __version__,
            "adapter": type(self.adapter).__name__,
            "action_space": describe_space(self.action_space),
            "has_lam": self.lam is not None,
            "has_reward_head": self.reward_head is not None,
            "shared": dict(refs),
            "shared_digests": dict(digests),
            "meta": self.meta,
        }
        (directory / BUNDLE_JSON).write_text(json.dumps(header, indent=1))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        expected_action_space: spaces.Space | None = None,
        device: str | torch.device = "cpu",
    ) -> AdaWorldBundle:
        """Load a bundle directory.

        Args:
            directory: written by :meth:`save_pretrained`.
            expected_action_space: if given, the bundle's action space must equal it (``ValueError`` if not):
                guards against driving, say, a Procgen bundle with a robot's actions.
            device: where the models go.

        Raises:
            FileNotFoundError: the directory or one of its files is missing (the message names it).
            ValueError: a file is corrupt (named), or the action space does not match.
        """
        directory = Path(directory).expanduser()  # "~/x" from Python, where no shell expands it
        header_path = _header_path(directory)
        try:
            header = json.loads(header_path.read_text())
            found = header.get("format")
            other_version = isinstance(found, str) and found.startswith("adaworld-bundle/")
            if found != BUNDLE_FORMAT and not other_version:
                raise ValueError(f"format {found!r}, expected {BUNDLE_FORMAT!r}")
        except (ValueError, AttributeError) as e:
            raise ValueError(f"corrupt bundle header {header_path}: {e}") from e
        if found != BUNDLE_FORMAT:  # not corrupt: written by another adaworld-gym version
            raise ValueError(
                f"bundle {directory} has format {found!r} (written by adaworld-gym {header.get('version', '?')}); "
                f"adaworld-gym {__version__} reads {BUNDLE_FORMAT!r} bundles"
            )
        if not isinstance(header.get("action_space"), dict):
            raise ValueError(f"corrupt bundle header {header_path}: no 'action_space' entry")
        if expected_action_space is not None:  # a cheap check before any weights are read; exact one below
            expected, found = describe_space(expected_action_space), header["action_space"]
            if expected != found:
                raise ActionSpaceMismatch(
                    f"bundle {directory} has action space {space_summary(found)}, expected {space_summary(expected)}"
                )

        shared = header.get("shared", {})
        if (
            not isinstance(shared, dict)
            or not set(shared) <= {"world_model", "lam", "reward"}
            or not all(isinstance(rel, str) for rel in shared.values())
        ):
            raise ValueError(f"corrupt bundle header {header_path}: bad 'shared' entry {shared!r}")
        digests = header.get("shared_digests", {})  # absent in bundles saved before it was recorded
        if not isinstance(digests, dict) or not set(digests) <= set(shared):
            raise ValueError(f"corrupt bundle header {header_path}: bad 'shared_digests' entry {digests!r}")

        def load(name: str, model_cls: type) -> Any:
            if name in shared and not (directory / shared[name]).is_dir():
                raise FileNotFoundError(
                    f"bundle {directory} shares its {name} with {shared[name]!r} (relative to the bundle), but "
                    f"{(directory / shared[name]).resolve()} does not exist: a bundle that shares a model must keep "
                    "its place next to it (move both, or save it with shared={} to hold a copy)"
                )
            if (
                name in digests
                and directory_digest(directory / shared[name], weights_only=True) != digests[name]
            ):
                raise ValueError(
                    f"bundle {directory} shares its {name} with {(directory / shared[name]).resolve()}, which "
                    "changed since the bundle was saved (its fingerprint differs): the bundle was built on "
                    "the old weights. Adapt again from the new model, or restore the old one"
                )
            return _load_model(model_cls, directory / shared.get(name, name), device)

        world_model = load("world_model", DiffusionWorldModel)
        lam = load("lam", LatentActionModel) if header.get("has_lam") else None
        reward_head = load("reward", RewardHead) if header.get("has_reward_head") else None
        adapter = load_adapter(directory / "adapter").to(device)
        frames_path = directory / INITIAL_FRAMES
        if not frames_path.is_file():
            raise FileNotFoundError(f"bundle file missing: {frames_path}")
        try:
            frames = np.load(frames_path, allow_pickle=False)
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:  # truncated, empty or not .npy
            raise ValueError(f"corrupt initial frames {frames_path}: {e}") from e
        if not isinstance(frames, np.ndarray):  # an .npz archive under the .npy name
            frames.close()
            raise ValueError(f"corrupt initial frames {frames_path}: an .npz archive, not one .npy array")
        try:
            bundle = cls(
                lam,
                world_model,
                adapter,
                frames,
                meta=header.get("meta", {}),
                reward_head=reward_head,
                shared={name: (directory / rel).resolve() for name, rel in shared.items()},
            )
        except ValueError as e:
            raise ValueError(f"inconsistent bundle {directory}: {e}") from e
        if describe_space(bundle.action_space) != header["action_space"]:
            raise ValueError(
                f"corrupt bundle header {header_path}: it names action space {header['action_space']}, "
                f"but the saved adapter serves {describe_space(bundle.action_space)}"
            )
        if expected_action_space is not None and bundle.action_space != expected_action_space:
            raise ActionSpaceMismatch(
                f"bundle {directory} has action space {bundle.action_space}, expected {expected_action_space}"
            )
        return bundle


def _public(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config as saved to JSON (tuples become lists), without diffusers' bookkeeping keys."""
    return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))


def _load_model(model_cls: type, path: Path, device: str | torch.device) -> Any:
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"bundle file missing: {config}")
    try:
        return model_cls.from_pretrained(path).to(device).eval()
    except (OSError, ValueError, RuntimeError) as e:  # diffusers reports missing/damaged weights as these
        raise ValueError(f"cannot load {model_cls.__name__} from {path}: {e}") from e


def _header_path(directory: Path) -> Path:
    """``directory/bundle.json``; ``FileNotFoundError`` naming what is there instead (nothing, an adapt run)."""
    header_path = directory / BUNDLE_JSON
    if header_path.is_file():
        return header_path
    if not directory.exists():
        raise FileNotFoundError(f"bundle directory not found: {directory}")
    hint = ""
    if (directory / "bundle" / BUNDLE_JSON).is_file():  # `adaworld adapt --out` holds its bundle in bundle/
        hint = f" ({directory} is an adapt run: its bundle is {directory / 'bundle'})"
    raise FileNotFoundError(f"not an AdaWorld bundle: {header_path} is missing{hint}")


def bundle_digest(directory: str | os.PathLike) -> str:
    """The :func:`~adaworld_gym.models.loading.directory_digest` of a saved bundle and the model directories it
    shares (``bundle.json``'s ``shared``), i.e. of everything that decides what it imagines."""
    directory = Path(directory)
    header_path = _header_path(directory)
    shared = json.loads(header_path.read_text()).get("shared", {})
    return directory_digest(directory, *(directory / rel for _, rel in sorted(shared.items())))


def tiny_random_bundle(
    action: str = "discrete",
    seed: int = 0,
    preset: str = "tiny",
    reward_head: bool = False,
    action_size: int = 2,
    action_agnostic: bool = False,
    motion: bool = False,
    frame_size: int = 64,
) -> AdaWorldBundle:
    """A random-weight bundle on the ``tiny`` presets, for tests and docs (frames are noise, but seeded).

    Args:
        action: ``"discrete"`` (codebook, 4 actions), ``"continuous"`` (MLP over Box(-1, 1, (action_size,))),
            ``"options"`` (4 random latent options) or ``"latent"`` (passthrough, bound 3).
        seed: seeds every weight and frame.
        preset: world-model preset (``"small"`` for speed measurements).
        reward_head: also give it a tiny random :class:`RewardHead` over frames and ``z`` (the rest of the
            bundle is the same as without it).
        action_size: dimensions of the ``"continuous"`` action (4 for RobosuitePush).
        action_agnostic: the world model is the twin that ignores z.
        motion: the ``"discrete"`` / ``"continuous"`` adapter also takes the motion context (random weights).
        frame_size: height and width of every frame (LAM, world model, reward head and start frames).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # module constructors draw from the global RNG; keep the caller's intact
        torch.manual_seed(seed)
        lam = LatentActionModel(**{**lam_preset("tiny"), "image_size": frame_size}).eval()
        latent_dim = lam.config.latent_dim
        world_model = DiffusionWorldModel(
            **world_model_preset(preset),
            sample_size=frame_size,
            num_history=2,
            action_dim=latent_dim,
            action_agnostic=action_agnostic,
            autocast_dtype=None,
        ).eval()
        # A fresh model ignores z (zero-initialised last layer); make actions matter so tests can see them.
        torch.nn.init.normal_(world_model.cond_mlp[-1].weight, std=0.05, generator=generator)
        motion_dim = latent_dim if motion else 0
        adapters = {
            "discrete": lambda: ActionCodebook(4, latent_dim, generator=generator, motion_dim=motion_dim),
            "continuous": lambda: ActionMLP(
                action_size, latent_dim, low=-1.0, high=1.0, motion_dim=motion_dim
            ),
            "options": lambda: LatentOptions(torch.randn(4, latent_dim, generator=generator)),
            "latent": lambda: LatentPassthrough(latent_dim, bound=3.0),
        }
        if action not in adapters:
            raise ValueError(f"unknown action kind {action!r}; choose one of {sorted(adapters)}")
        adapter = adapters[action]().eval()
        if motion and action not in ("discrete", "continuous"):
            raise ValueError(f"motion applies to the discrete and continuous adapters, not {action!r}")
        if isinstance(adapter, ActionCodebook) and adapter.motion is not None:  # make the motion term matter
            torch.nn.init.normal_(adapter.motion.weight, std=0.5, generator=generator)
        head = (
            RewardHead(latent_dim=latent_dim, image_size=frame_size, channels=(4, 4, 4, 4), hidden=8).eval()
            if reward_head
            else None
        )
    frames = np.random.default_rng(seed).integers(0, 256, (3, 2, frame_size, frame_size, 3), dtype=np.uint8)
    return AdaWorldBundle(
        lam,
        world_model,
        adapter,
        frames,
        meta={
            "source": f"tiny_random_bundle({action!r}, action_agnostic={action_agnostic}, motion={motion}): "
            "random weights"
        },
        reward_head=head,
    )
