"""Action adapters: map an environment's real actions to the world model's latent action ``z`` (AdaWorld 3).

Each adapter is a small ``nn.Module`` with a Gymnasium ``action_space``:

* :class:`ActionCodebook`: ``Discrete(n)`` real actions -> rows of an ``nn.Embedding``, initialised with the mean
  latent action of each action's labelled transitions (:meth:`ActionCodebook.init_from_labelled`); left random,
  it is the action-agnostic baseline's table.
* :class:`ActionMLP`: ``Box`` real actions -> ``Linear-SiLU-Linear``, pre-fit on (action, mu) pairs
  (:meth:`ActionMLP.fit`).
* :class:`LatentOptions`: ``Discrete(K)`` over K k-means centres of mu (control without labels).
* :class:`LatentPassthrough`: the latent action itself, as a ``Box(-bound, bound, (d,))``.

``forward(tensor)`` is the differentiable path (finetuning, planning); ``to_latent(numpy batch)`` is the checked
path used by the environments: it raises ``ValueError`` naming the problem for a wrong shape or dtype, NaN or an
out-of-range action. Adapters are saved as ``config.json`` + ``adapter.safetensors`` (no pickle) with
:meth:`LatentAdapter.save_pretrained` and rebuilt with :func:`load_adapter`.

Motion context: a real action sets only part of the latent action (its effect depends on how things already move:
momentum, contact). :class:`ActionCodebook` and :class:`ActionMLP` built with ``motion_dim=d`` also take the
*motion context* ``[B, d + 1]`` of :func:`adaworld_gym.latent.motion_context`: the LAM's ``mu`` of the last
transition in the history frames and a flag that says whether there was one (``motion_dim=0``: the action alone).

Example::

    >>> import numpy as np
    >>> codebook = ActionCodebook(num_actions=3, latent_dim=4)
    >>> codebook.to_latent(np.array([0, 2])).shape
    (2, 4)
"""

from __future__ import annotations

import json
import operator
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save
from torch import nn

from adaworld_gym.data.episodes import atomic_write_bytes
from adaworld_gym.sims.procgen import check_discrete_action

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "ActionCodebook",
    "ActionMLP",
    "LatentAdapter",
    "LatentOptions",
    "LatentPassthrough",
    "load_adapter",
]

ADAPTER_CONFIG = "config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"


class LatentAdapter(nn.Module):
    """Base class: a real action space, a map to ``z [B, latent_dim]``, and config + safetensors persistence."""

    registry: ClassVar[dict[str, type[LatentAdapter]]] = {}
    latent_dim: int
    motion_dim: int = 0  # > 0: z also depends on the motion context [B, motion_dim + 1]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        LatentAdapter.registry[cls.__name__] = cls

    @property
    def action_space(self) -> spaces.Space:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments; the weights come from the safetensors file."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LatentAdapter:
        return cls(**config)

    def _check_actions(self, actions: Any) -> np.ndarray:
        """Validate a batch of actions of ``action_space``; return them as a numpy array."""
        raise NotImplementedError

    @property
    def uses_motion(self) -> bool:
        return self.motion_dim > 0

    def _motion_or_unknown(
        self, motion: torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        """The differentiable path's motion context; None means unknown: zeros with the flag off."""
        if motion is None:
            return torch.zeros(batch, self.motion_dim + 1, device=device)
        return motion.float()

    def check_motion(self, motion: Any, batch: int) -> np.ndarray | None:
        """Validate a motion context for ``batch`` actions (None: the adapter ignores motion)."""
        if not self.uses_motion:
            if motion is not None:
                raise ValueError(f"{type(self).__name__} was built without motion context (motion_dim=0)")
            return None
        if motion is None:
            raise ValueError(
                f"this {type(self).__name__} needs the motion context [B, {self.motion_dim + 1}] "
                "(adaworld_gym.latent.motion_context of the history frames)"
            )
        array = np.asarray(motion)
        if array.dtype.kind != "f" or array.shape != (batch, self.motion_dim + 1):
            raise ValueError(
                f"motion context must be float [{batch}, {self.motion_dim + 1}], got {array.dtype} {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError("motion context contains NaN or inf")
        return array.astype(np.float32)

    @torch.no_grad()
    def to_latent(self, actions: Any, motion: Any = None) -> np.ndarray:
        """Checked map of a batch of actions (leading batch axis) to float32 ``[B, latent_dim]`` numpy.

        ``motion``: the motion context ``[B, motion_dim + 1]``, required exactly when :attr:`uses_motion`.
        """
        checked = self._check_actions(actions)
        context = self.check_motion(motion, len(checked))
        tensors = [*self.parameters(), *self.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
        x = torch.from_numpy(checked).to(device)
        if context is None:
            return self(x).float().cpu().numpy()
        return self(x, torch.from_numpy(context).to(device)).float().cpu().numpy()

    # Buffers that the config determines (an ActionMLP's rescaling): checked against it when loading.
    config_buffers: tuple[str, ...] = ()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the weights, then the config, each atomically (a bundle's save swaps in its whole directory)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"adapter": type(self).__name__, "config": self.config()}
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / ADAPTER_WEIGHTS, save(state))
        atomic_write_bytes(directory / ADAPTER_CONFIG, json.dumps(config, indent=1).encode())


def load_adapter(directory: str | os.PathLike) -> LatentAdapter:
    """Rebuild an adapter saved with :meth:`LatentAdapter.save_pretrained`; errors name the bad file."""
    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"adapter file missing: {path}")
    try:
        config = json.loads(config_path.read_text())
        cls = LatentAdapter.registry[config["adapter"]]
        adapter = cls.from_config(config["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt adapter config {config_path}: {e!r}") from e
    implied = {name: getattr(adapter, name).clone() for name in adapter.config_buffers}
    try:
        weights = load_file(str(weights_path))
        adapter.load_state_dict(weights)
    except Exception as e:  # safetensors and load_state_dict raise their own error types
        raise ValueError(f"corrupt adapter weights {weights_path}: {e}") from e
    bad = sorted(name for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if bad:
        raise ValueError(f"corrupt adapter weights {weights_path}: NaN or inf in {', '.join(bad)}")
    stale = [name for name, value in implied.items() if not torch.equal(getattr(adapter, name), value)]
    if stale:
        raise ValueError(
            f"{weights_path} does not belong to {config_path}: its {', '.join(stale)} "
            f"{'differs' if len(stale) == 1 else 'differ'} from what the config implies (weights and config of "
            "different saves)"
        )
    return adapter.eval()


# ---------------------------------------------------------------------------------------------- validation
def _size(value: Any, name: str) -> int:
    """A size given as any integer (a Gymnasium ``Discrete.n`` is a numpy int) as a Python ``int``: the config is
    written as JSON, which cannot hold numpy integers, so a numpy size only failed at ``save_pretrained``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return int(operator.index(value))
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _check_mu(mu: Any, n: int, latent_dim: int, dtype: type = np.float32) -> np.ndarray:
    """Latent actions ``[n, latent_dim]`` to fit an adapter on: right shape, all finite."""
    mu = np.array(mu, dtype=dtype)  # a copy: fit() wraps it with torch.from_numpy (read-only input warns)
    if mu.shape != (n, latent_dim):
        raise ValueError(f"mu must have shape [{n}, {latent_dim}], got {mu.shape}")
    if not np.isfinite(mu).all():
        raise ValueError("mu contains NaN or inf")
    return mu


def _check_nonempty(actions: np.ndarray) -> np.ndarray:
    # A fit on no transitions would fail inside torch (fit) or zero the motion term with a NaN error (fit_motion).
    if len(actions) == 0:
        raise ValueError("cannot fit an adapter on 0 transitions")
    return actions


def _check_discrete_batch(actions: Any, n: int) -> np.ndarray:
    array = np.asarray(actions)
    if array.ndim != 1:
        raise ValueError(f"expected a batch of discrete actions with shape [B], got shape {array.shape}")
    return np.array([check_discrete_action(a, n) for a in array], dtype=np.int64)


def _check_box_batch(actions: Any, space: spaces.Box) -> np.ndarray:
    array = np.asarray(actions)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"continuous actions must be numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1:] != space.shape:
        raise ValueError(f"expected a batch of actions with shape [B, {space.shape[0]}], got {array.shape}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("actions contain NaN or inf")
    outside = (array < space.low) | (array > space.high)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise ValueError(
            f"action {array[row].tolist()} out of range: dimension {col} must lie in "
            f"[{space.low[col]}, {space.high[col]}]"
        )
    return array


# ---------------------------------------------------------------------------------------------- adapters
class ActionCodebook(LatentAdapter):
    """``Discrete(num_actions)`` -> ``nn.Embedding(num_actions, latent_dim)`` (AdaWorld's discrete adapter).

    Args:
        num_actions: size of the real discrete action set.
        latent_dim: the world model's ``action_dim``.
        generator: source of the random initial table (the action-agnostic baseline keeps it).
        motion_dim: > 0 adds ``Linear(motion context)`` to the row, zero-initialised (see the module docstring;
            :meth:`fit_motion` sets it by least squares).
    """

    def __init__(
        self,
        num_actions: int,
        latent_dim: int,
        generator: torch.Generator | None = None,
        motion_dim: int = 0,
    ) -> None:
        super().__init__()
        num_actions, latent_dim = _size(num_actions, "num_actions"), _size(latent_dim, "latent_dim")
        motion_dim = _size(motion_dim, "motion_dim")
        if num_actions < 1 or latent_dim < 1 or motion_dim < 0:
            raise ValueError(
                f"num_actions and latent_dim must be >= 1 and motion_dim >= 0, got {num_actions}, {latent_dim}, "
                f"{motion_dim}"
            )
        self.num_actions, self.latent_dim, self.motion_dim = num_actions, latent_dim, motion_dim
        self.embedding = nn.Embedding(num_actions, latent_dim)
        nn.init.normal_(self.embedding.weight, generator=generator)
        self.motion = nn.Linear(motion_dim + 1, latent_dim) if motion_dim else None
        if self.motion is not None:  # new conditioning starts at zero: the plain codebook
            nn.init.zeros_(self.motion.weight)
            nn.init.zeros_(self.motion.bias)

    @property
    def action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def config(self) -> dict[str, Any]:
        config = {"num_actions": self.num_actions, "latent_dim": self.latent_dim}
        return {**config, "motion_dim": self.motion_dim} if self.motion_dim else config

    def forward(self, actions: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        z = self.embedding(actions.long())
        if self.motion is not None:
            context = self._motion_or_unknown(motion, len(z), z.device)
            z = z + self.motion(context.to(self.motion.weight.dtype))  # fp32 context, maybe bf16 weights
        return z

    def _check_actions(self, actions: Any) -> np.ndarray:
        return _check_discrete_batch(actions, self.num_actions)

    @torch.no_grad()
    def init_from_labelled(
        self, actions: np.ndarray, mu: np.ndarray, max_per_action: int = 100, seed: int = 0
    ) -> list[int]:
        """Set each row to the mean ``mu`` of (at most ``max_per_action``) transitions labelled with it.

        Args:
            actions: int ``[N]`` real actions of labelled transitions.
            mu: float ``[N, latent_dim]`` the frozen LAM's latent actions of the same transitions.
            max_per_action: cap per action (AdaWorld: 100 samples per action), drawn without replacement.
            seed: seed of that draw.

        Returns:
            The actions that had no samples; their rows keep the random initialisation.
        """
        if not isinstance(max_per_action, int | np.integer) or max_per_action < 1:
            # 0 would average no samples: a NaN row that to_latent then serves
            raise ValueError(f"max_per_action must be an integer >= 1, got {max_per_action!r}")
        actions = _check_discrete_batch(actions, self.num_actions)
        mu = _check_mu(mu, len(actions), self.latent_dim)
        rng = np.random.default_rng(seed)
        missing = []
        for a in range(self.num_actions):
            rows = np.flatnonzero(actions == a)
            if len(rows) == 0:
                missing.append(a)
                continue
            if len(rows) > max_per_action:
                rows = rng.choice(rows, max_per_action, replace=False)
            self.embedding.weight[a] = torch.from_numpy(mu[rows].mean(axis=0))
        return missing

    @torch.no_grad()
    def fit_motion(
        self, actions: np.ndarray, mu: np.ndarray, motion: np.ndarray, ridge: float = 1e-3
    ) -> float:
        """Least squares of ``mu`` on (action one-hot, motion context): refits the rows with the motion term.

        A row becomes its action's mean latent *at zero motion* rather than on average (rows of actions without
        transitions here are kept). Returns the fit's MSE on these transitions.
        """
        if self.motion is None:
            raise ValueError("fit_motion needs a codebook built with motion_dim > 0")
        if not (np.isfinite(ridge) and ridge > 0):
            raise ValueError(f"ridge must be finite and > 0, got {ridge!r}")
        actions = _check_nonempty(_check_discrete_batch(actions, self.num_actions))
        context = self.check_motion(motion, len(actions)).astype(np.float64)
        if np.ptp(context[:, -1]) == 0 and context[0, -1] != 0:
            # No episode start among the windows: the flag column equals the one-hots' sum, and the ridge would
            # split each action's mean between its row and the flag. Rows then keep the whole mean.
            warnings.warn(
                "no labelled window starts an episode: the motion flag's weight stays 0 (rows hold the means)",
                stacklevel=2,
            )
            context[:, -1] = 0.0
        mu = _check_mu(mu, len(actions), self.latent_dim, np.float64)
        seen = np.unique(actions)
        onehot = (actions[:, None] == seen[None]).astype(np.float64)
        x = np.hstack([onehot, context])
        solution = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ mu)
        rows, weight = solution[: len(seen)], solution[len(seen) :]
        self.embedding.weight[torch.from_numpy(seen)] = torch.from_numpy(rows).float()
        self.motion.weight.copy_(torch.from_numpy(weight.T))
        self.motion.bias.zero_()
        return float(((x @ solution - mu) ** 2).mean())


class ActionMLP(LatentAdapter):
    """``Box`` real actions -> ``Linear(n, hidden)-SiLU-Linear(hidden, latent_dim)`` (AdaWorld's continuous adapter).

    Actions are rescaled to [-1, 1] from the real env's bounds before the first layer (when the bounds are
    finite), so the same learning rate suits any action units.

    Args:
        action_dim: n, the real action dimension.
        latent_dim: the world model's ``action_dim``.
        low, high: the real env's action bounds (scalars or length-n sequences).
        hidden: width of the hidden layer (default ``latent_dim``, as in AdaWorld).
        motion_dim: > 0 also feeds the motion context (see the module docstring) to the first layer.
    """

    config_buffers = ("offset", "scale")  # the action rescaling, from the bounds in the config

    def __init__(
        self,
        action_dim: int,
        latent_dim: int,
        low: float | list[float] = -1.0,
        high: float | list[float] = 1.0,
        hidden: int | None = None,
        motion_dim: int = 0,
    ) -> None:
        super().__init__()
        action_dim, latent_dim = _size(action_dim, "action_dim"), _size(latent_dim, "latent_dim")
        motion_dim = _size(motion_dim, "motion_dim")
        hidden = None if hidden is None else _size(hidden, "hidden")
        if action_dim < 1 or latent_dim < 1 or motion_dim < 0:
            raise ValueError(
                f"need action_dim >= 1, latent_dim >= 1 and motion_dim >= 0, got {action_dim}, {latent_dim}, "
                f"{motion_dim}"
            )
        self.action_dim, self.latent_dim, self.motion_dim = action_dim, latent_dim, motion_dim
        self.hidden = hidden or latent_dim
        self._space = spaces.Box(
            np.broadcast_to(np.float32(low), (action_dim,)).copy(),
            np.broadcast_to(np.float32(high), (action_dim,)).copy(),
            dtype=np.float32,
        )
        bounded = self._space.is_bounded("both")
        mid = (self._space.high + self._space.low) / 2 if bounded else np.zeros(action_dim, np.float32)
        half = (self._space.high - self._space.low) / 2 if bounded else np.ones(action_dim, np.float32)
        self.register_buffer("offset", torch.from_numpy(mid))
        self.register_buffer("scale", torch.from_numpy(np.maximum(half, 1e-6)))
        inputs = action_dim + (motion_dim + 1 if motion_dim else 0)
        self.net = nn.Sequential(
            nn.Linear(inputs, self.hidden), nn.SiLU(), nn.Linear(self.hidden, latent_dim)
        )

    @property
    def action_space(self) -> spaces.Box:
        return self._space

    def config(self) -> dict[str, Any]:
        return {
            "action_dim": self.action_dim,
            "latent_dim": self.latent_dim,
            "low": self._space.low.tolist(),
            "high": self._space.high.tolist(),
            "hidden": self.hidden,
            **({"motion_dim": self.motion_dim} if self.motion_dim else {}),
        }

    def forward(self, actions: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        x = (actions.float() - self.offset) / self.scale
        if self.motion_dim:
            x = torch.cat([x, self._motion_or_unknown(motion, len(x), x.device)], dim=1)
        return self.net(x.to(self.net[0].weight.dtype))  # fp32 inputs, maybe bf16 weights

    def _check_actions(self, actions: Any) -> np.ndarray:
        return _check_box_batch(actions, self._space)

    def fit(
        self,
        actions: np.ndarray,
        mu: np.ndarray,
        steps: int = 3000,
        lr: float = 1e-3,
        batch_size: int = 256,
        seed: int = 0,
        motion: np.ndarray | None = None,
    ) -> float:
        """Pre-fit on (action, mu) pairs with Adam and an MSE loss; returns the final full-data MSE.

        Args:
            actions: float ``[N, action_dim]`` real actions within the bounds.
            mu: float ``[N, latent_dim]`` the frozen LAM's latent actions of the same transitions.
            steps, lr, batch_size: optimisation budget (AdaWorld: 3K steps).
            seed: seed of the minibatch draws.
            motion: the transitions' motion contexts ``[N, motion_dim + 1]``, exactly when :attr:`uses_motion`.
        """
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        x = torch.from_numpy(_check_nonempty(self._check_actions(actions)))
        y = torch.from_numpy(_check_mu(mu, len(x), self.latent_dim))
        context = self.check_motion(motion, len(x))
        device = self.offset.device
        x, y = x.to(device), y.to(device)
        m = None if context is None else torch.from_numpy(context).to(device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        for _ in range(steps):
            idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator).to(device)
            loss = torch.nn.functional.mse_loss(self(x[idx], None if m is None else m[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.eval()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(self(x, m), y))


class LatentOptions(LatentAdapter):
    """``Discrete(K)`` over K latent actions, e.g. k-means centres of mu (:func:`adaworld_gym.latent.kmeans`)."""

    def __init__(self, centres: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        # A copy in fp32: the buffer must not alias the caller's array (reusing it would change the options).
        if isinstance(centres, torch.Tensor):
            centres = centres.detach().to("cpu", torch.float32, copy=True)
        else:
            centres = torch.from_numpy(np.array(centres, dtype=np.float32))
        if centres.ndim != 2 or len(centres) < 1 or not torch.isfinite(centres).all():
            raise ValueError(f"centres must be finite floats of shape [K, d], got {tuple(centres.shape)}")
        self.num_options, self.latent_dim = centres.shape
        self.register_buffer("centres", centres)  # frozen: not a parameter

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LatentOptions:
        return cls(np.zeros((config["num_options"], config["latent_dim"]), np.float32))  # weights load next

    @property
    def action_space(self) -> spaces.Discrete:
        return spaces.Discrete(self.num_options)

    def config(self) -> dict[str, Any]:
        return {"num_options": self.num_options, "latent_dim": self.latent_dim}

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        return self.centres[actions.long()]

    def _check_actions(self, actions: Any) -> np.ndarray:
        return _check_discrete_batch(actions, self.num_options)


class LatentPassthrough(LatentAdapter):
    """The latent action itself as a ``Box(-bound, bound, (latent_dim,))`` action.

    :meth:`to_latent` rejects out-of-range actions like every adapter; ``forward`` (the differentiable path for
    planners) clips them to the bound instead.
    """

    def __init__(self, latent_dim: int, bound: float = 3.0) -> None:
        super().__init__()
        latent_dim = _size(latent_dim, "latent_dim")
        if latent_dim < 1 or not bound > 0:
            raise ValueError(f"latent_dim must be >= 1 and bound > 0, got {latent_dim}, {bound}")
        self.latent_dim, self.bound = latent_dim, float(bound)
        self._space = spaces.Box(-self.bound, self.bound, (latent_dim,), np.float32)

    @property
    def action_space(self) -> spaces.Box:
        return self._space

    def config(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "bound": self.bound}

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        return actions.float().clamp(-self.bound, self.bound)

    def _check_actions(self, actions: Any) -> np.ndarray:
        return _check_box_batch(actions, self._space)
