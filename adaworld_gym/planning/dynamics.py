"""What a planner imagines with: a learned world model or copies of the real simulator, behind one call.

Both implement :class:`Dynamics`: ``rollout(context, actions, state=None) -> frames``.

* :class:`WorldModelDynamics` runs an adapted :class:`~adaworld_gym.models.bundle.AdaWorldBundle`: raw actions
  go through the bundle's adapter to latent actions ``z``, then one batched autoregressive
  :meth:`DiffusionWorldModel.rollout` predicts every candidate's frames from the ``context`` frames. It ignores
  ``state``. An adapter that takes the motion context (``motion_dim > 0``) is fed it frame by frame, from the
  LAM's latent action of the last two frames so far (real, then imagined).
* :class:`SimulatorDynamics` is VP2's oracle: worker processes hold copies of the real env, restore ``state``
  (``env.unwrapped.set_state``; exact for RobosuitePush and Procgen), run the candidate actions and return the
  rendered frames. It ignores ``context``.

Example::

    >>> from adaworld_gym.models.bundle import tiny_random_bundle
    >>> dynamics = WorldModelDynamics(tiny_random_bundle("discrete"), steps=1, generator_seed=0)
    >>> context = np.zeros((3, 2, 64, 64, 3), np.uint8)             # 3 candidates, 2 history frames
    >>> dynamics.rollout(context, np.zeros((3, 5), np.int64)).shape  # 5 actions each
    (3, 5, 64, 64, 3)
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import gymnasium
import numpy as np
from gymnasium import spaces

from adaworld_gym._checks import check_seed, is_int
from adaworld_gym.data.collect import exit_with_parent

if TYPE_CHECKING:  # torch and the models load only when a world model is used (not in simulator workers)
    from adaworld_gym.models.bundle import AdaWorldBundle

__all__ = ["Dynamics", "SimulatorDynamics", "WorldModelDynamics", "check_actions", "make_dynamics"]


@runtime_checkable
class Dynamics(Protocol):
    """A batched action-conditioned frame predictor that planners can query.

    Attributes:
        action_space: the (single-step) action space candidates are drawn from: ``Box`` or ``Discrete``.
        context_frames: how many past frames ``rollout`` uses (the most recent ones); 1 if it ignores them.
        uses_state: True if ``rollout`` needs the simulator ``state`` (and ignores ``context``).
    """

    action_space: spaces.Space
    context_frames: int
    uses_state: bool

    def rollout(self, context: np.ndarray | None, actions: np.ndarray, state: Any = None) -> np.ndarray:
        """Predict the frames after each action of each candidate.

        Args:
            context: uint8 ``[B, k, H, W, 3]`` past frames per candidate, oldest first (learned models); k is at
                most ``context_frames`` and smaller at an episode's start. Planners pass a read-only broadcast
                view: copy it before writing into it.
            actions: ``[B, T, *action_space.shape]`` candidate action sequences (``[B, T]`` ints for Discrete).
            state: the simulator state to start every candidate from (simulators).

        Returns:
            uint8 ``[B, T, H, W, 3]``: frame t follows action t.
        """
        ...


DYNAMICS_MEMBERS = ("rollout", "action_space", "context_frames", "uses_state")


def not_a_dynamics(obj: Any) -> str:
    """Why ``obj`` is not a :class:`Dynamics`: the members it lacks, and what the protocol asks for."""
    missing = [name for name in DYNAMICS_MEMBERS if not hasattr(obj, name)]
    if missing:
        lacks = f"it lacks {', '.join(missing)}"
    elif not callable(obj.rollout):
        lacks = "its rollout is not callable"
    else:  # Python 3.12's protocol check does not see members served by __getattr__
        lacks = "its members are not all plain attributes (a wrapper's __getattr__ is not seen by the check)"
    return (
        f"{type(obj).__name__} is not a Dynamics: {lacks} (a Dynamics has rollout(context, actions, state=None) "
        "-> uint8 [B, T, H, W, 3], action_space, context_frames: int and uses_state: bool; see "
        "adaworld_gym.planning.Dynamics, or use WorldModelDynamics / SimulatorDynamics)"
    )


def check_actions(actions: Any, space: spaces.Space) -> np.ndarray:
    """Validate a ``[B, T, *space.shape]`` batch of action sequences (the shape, and a discrete action's range; Box
    values are checked by whoever consumes them) and return it as an array of the space's dtype."""
    array = np.asarray(actions)
    if isinstance(space, spaces.Discrete):
        if array.ndim != 2 or array.dtype.kind not in "iu":
            raise ValueError(
                f"discrete actions must be integers of shape [B, T], got {array.dtype} {array.shape}"
            )
        low, high = int(space.start), int(space.start + space.n)
        if array.size and (array.min() < low or array.max() >= high):
            raise ValueError(
                f"discrete actions must lie in [{low}, {high}), got {array.min()}..{array.max()}"
            )
        return array.astype(np.int64)
    if isinstance(space, spaces.Box):
        if array.ndim != 2 + len(space.shape) or array.shape[2:] != space.shape:
            raise ValueError(
                f"actions must have shape [B, T, {', '.join(map(str, space.shape))}], got {array.shape}"
            )
        return array.astype(space.dtype)
    raise TypeError(f"unsupported action space {space}: planners handle Box and Discrete")


def _check_batch(actions: np.ndarray) -> tuple[int, int]:
    if actions.shape[0] < 1 or actions.shape[1] < 1:
        raise ValueError(f"need at least one candidate and one step, got actions of shape {actions.shape}")
    return actions.shape[0], actions.shape[1]


# ----------------------------------------------------------------------------------------------- learned


class WorldModelDynamics:
    """An adapted bundle's diffusion world model as planning dynamics.

    Candidates are predicted in chunks of ``chunk_size`` with one batched UNet call per step and chunk. Each
    ``rollout`` call draws its diffusion noise from ``torch.Generator`` objects seeded from
    ``(generator_seed, call number)``, one per candidate, so the noise does not depend on the chunking (frames
    can still differ by one grey level: batched arithmetic rounds differently per batch size), and a fresh
    instance with the same seed repeats the same sequence of calls exactly. With ``common_noise`` (default) every
    candidate of a call gets the same noise: candidates then differ only through their actions, which is what
    a planner compares (common random numbers).

    Args:
        bundle: the adapted bundle (an :class:`AdaWorldBundle` or the path of a saved one).
        steps: Euler denoising steps per frame (AdaWorld's planning: 3; 1 is fastest).
        generator_seed: seed of the diffusion noise.
        chunk_size: candidates per batched model call (bounds memory).
        guidance_scale: classifier-free guidance on ``z`` (1 = off; AdaWorld plans without it).
        common_noise: same noise for every candidate of a call (see above); False gives each its own.
        latent_bound: plan directly in the latent action space ``Box(-b, b, (action_dim,))`` instead of the
            bundle's action space (the adapter is bypassed). A bundle with a ``LatentPassthrough`` adapter does
            this already.
    """

    uses_state = False

    def __init__(
        self,
        bundle: AdaWorldBundle | str | os.PathLike,
        steps: int = 1,
        generator_seed: int = 0,
        chunk_size: int = 64,
        guidance_scale: float = 1.0,
        common_noise: bool = True,
        latent_bound: float | None = None,
    ) -> None:
        from adaworld_gym.models.adapters import LatentPassthrough
        from adaworld_gym.models.bundle import AdaWorldBundle

        if not isinstance(bundle, AdaWorldBundle):
            bundle = AdaWorldBundle.from_pretrained(Path(bundle))
        if not is_int(steps) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if not is_int(chunk_size) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        steps, chunk_size = int(steps), int(chunk_size)
        self.bundle = bundle
        self.world_model = bundle.world_model
        latent_dim = self.world_model.config.action_dim
        self.adapter = bundle.adapter if latent_bound is None else LatentPassthrough(latent_dim, latent_bound)
        self.action_space: spaces.Space = self.adapter.action_space
        self.context_frames: int = int(self.world_model.config.num_history)
        self.steps, self.chunk_size = steps, chunk_size
        if not isinstance(guidance_scale, numbers.Real) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        self.guidance_scale, self.common_noise = float(guidance_scale), bool(common_noise)
        self.reseed(generator_seed)

    def reseed(self, generator_seed: int) -> None:
        """Restart the noise sequence: the next call is call 0 of ``generator_seed``."""
        self.generator_seed, self.calls = check_seed(generator_seed, "generator_seed"), 0

    def _call_seed(self) -> int:
        seed = int(np.random.SeedSequence([self.generator_seed, self.calls]).generate_state(1, np.uint64)[0])
        self.calls += 1
        return seed >> 1  # torch seeds are signed 64-bit

    def rollout(self, context: np.ndarray | None, actions: np.ndarray, state: Any = None) -> np.ndarray:
        """See :meth:`Dynamics.rollout`; ``state`` is ignored. Actions outside the space raise ``ValueError``."""
        import torch

        actions = check_actions(actions, self.action_space)
        batch, horizon = _check_batch(actions)
        if context is None:
            raise ValueError(
                "WorldModelDynamics predicts from past frames: pass context (uint8 [B, k, H, W, 3]); "
                "only SimulatorDynamics plans from a simulator state"
            )
        context = np.asarray(context)
        if (
            context.dtype != np.uint8
            or context.ndim != 5
            or context.shape[0] != batch
            or context.shape[1] < 1
        ):
            raise ValueError(
                f"context must be uint8 [B={batch}, k>=1, H, W, 3], got {context.dtype} {context.shape}"
            )
        context = context[:, -self.context_frames :]
        seed = self._call_seed()
        size = context.shape[2:]
        out = np.empty((batch, horizon, *size), np.uint8)
        motion = self.adapter.uses_motion
        # The adapter's checked path: rejects NaN or out-of-range actions with a message naming them.
        z = (
            None
            if motion
            else self.adapter.to_latent(actions.reshape(batch * horizon, *self.action_space.shape))
        )
        for start in range(0, batch, self.chunk_size):
            stop = min(start + self.chunk_size, batch)
            generators = [
                torch.Generator().manual_seed(seed if self.common_noise else seed + i)
                for i in range(start, stop)
            ]
            # A writable copy: torch warns on read-only views.
            chunk = np.array(context[start:stop], order="C")
            if motion:
                out[start:stop] = self._rollout_with_motion(chunk, actions[start:stop], generators)
                continue
            out[start:stop] = self.world_model.rollout(
                chunk,
                z.reshape(batch, horizon, -1)[start:stop],
                steps=self.steps,
                generator=generators,
                guidance_scale=self.guidance_scale,
            )
        return out

    def _rollout_with_motion(
        self, context: np.ndarray, actions: np.ndarray, generators: list[Any]
    ) -> np.ndarray:
        """Frame by frame: each step's ``z`` depends on the motion in the frames imagined so far."""
        batch, h = context.shape[:2]
        k = self.context_frames
        window = np.zeros((batch, k, *context.shape[2:]), np.uint8)
        window[:, k - h :] = context
        lengths = np.full(batch, h)
        frames = []
        for t in range(actions.shape[1]):
            z = self.bundle.latents(actions[:, t], window, lengths)
            frame = self.world_model.predict_next(
                window,
                z,
                steps=self.steps,
                generator=generators,
                guidance_scale=self.guidance_scale,
                history_len=lengths,
            )
            frames.append(frame)
            window = np.concatenate([window[:, 1:], frame[:, None]], axis=1)
            lengths = np.minimum(lengths + 1, k)
        return np.stack(frames, axis=1)


# --------------------------------------------------------------------------------------------- simulator


def _env_action(action: np.ndarray, space: spaces.Space) -> Any:
    return int(action) if isinstance(space, spaces.Discrete) else np.asarray(action, dtype=space.dtype)


def _frame_of(env: gymnasium.Env, obs: Any) -> np.ndarray:
    if isinstance(obs, np.ndarray) and obs.dtype == np.uint8 and obs.ndim == 3:
        return obs
    frame = env.render()  # the observation is not an image (e.g. a Dict): use the rendered frame
    if frame is None:
        raise RuntimeError("the simulator's observation is not an image and render() returned None")
    return np.asarray(frame)


def _start_frame(base: gymnasium.Env, state: Any, obs: Any) -> np.ndarray:
    """The frame of ``state`` itself (rendered after restoring it); the terminal ``obs`` if the env cannot
    render."""
    terminal = _frame_of(base, obs)
    base.set_state(state)
    frame = base.render()
    if frame is None:
        return np.array(terminal)
    if np.shape(frame) != terminal.shape:
        raise ValueError(
            f"{type(base).__name__}.render() gives {np.shape(frame)} frames but its observations are "
            f"{terminal.shape}: the simulator oracle needs them the same size"
        )
    # A copy: it is held for every candidate that ends at once, while the env may reuse its frame buffer.
    return np.array(frame)


def _simulate(env: gymnasium.Env, state: Any, actions: np.ndarray) -> np.ndarray:
    """Run each candidate from ``state``; uint8 ``[b, T, H, W, 3]``.

    After a termination the remaining steps repeat the last frame before it: actions after the end cannot be
    executed in the real episode either, and Procgen's terminal observation already shows the next try. A
    candidate that ends on its first step repeats the frame of ``state``.
    """
    base = env.unwrapped  # the state belongs to the base env; wrapper state (time limits) cannot be restored
    space = base.action_space
    frames: np.ndarray | None = None
    start: np.ndarray | None = None  # the frame of ``state``, rendered once if a candidate ends at once
    for i, sequence in enumerate(actions):
        base.set_state(state)
        done, last = False, None
        for t, action in enumerate(sequence):
            if not done:
                obs, _, terminated, truncated, _ = base.step(_env_action(action, space))
                done = bool(terminated or truncated)  # a Procgen time-out also shows the next try
                if not done:
                    # A copy: an env may write every observation into one buffer, and the terminal step's
                    # (the next try's) would then show in the frames held after it.
                    last = np.array(_frame_of(base, obs))
                elif last is None:
                    # Ended on the first step: the frame before it is the start's. Showing the next try
                    # instead scored completing a level at once below standing still at its goal frame.
                    if start is None:
                        start = _start_frame(base, state, obs)
                    last = start
            if frames is None:
                frames = np.empty((len(actions), len(sequence), *last.shape), np.uint8)
            frames[i, t] = last
    assert frames is not None
    return frames


def _check_state_api(env: gymnasium.Env) -> None:
    base = env.unwrapped
    if not (callable(getattr(base, "get_state", None)) and callable(getattr(base, "set_state", None))):
        raise TypeError(
            f"{type(base).__name__} has no get_state/set_state, so it cannot be restored to the planning state"
        )


def _worker_main(conn: Connection, parent: int, env_factory: Callable[[], gymnasium.Env]) -> None:
    """A simulator worker: build the env, then answer ``("rollout", state, actions)`` until ``("close",)``."""
    # A terminal's Ctrl-C reaches the whole process group: the parent stops the pool (close()), so a worker
    # ignores it rather than print a KeyboardInterrupt traceback of its own or die mid-answer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
    try:
        env = env_factory()
        _check_state_api(env)
        env.reset(seed=0)  # some envs (Procgen) only accept set_state after a reset
        conn.send(("ready", env.unwrapped.action_space))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent closed its end
                break
            if message[0] == "close":
                break
            try:
                conn.send(("ok", _simulate(env, message[1], message[2])))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        env.close()


class SimulatorDynamics:
    """The real simulator as planning dynamics (VP2's oracle): copies of the env run the candidates.

    ``workers`` spawned processes (``spawn`` context: safe with threads, OpenGL and torch) each build one env
    with ``env_factory`` and exit with their parent. A rollout splits the candidates into contiguous blocks, one
    per worker; every candidate starts from ``state`` via ``env.unwrapped.set_state``, so the frames do not
    depend on the number of workers. ``workers=0`` runs one env in this process.

    Args:
        env_factory: builds the env; must be picklable for ``workers >= 1`` (a class such as
            ``RobosuitePushEnv``, a module-level function, or a ``functools.partial`` of one). Its unwrapped env
            needs ``get_state``/``set_state`` and is stepped directly (wrappers are bypassed).
        workers: number of worker processes (VP2 ran 16); 0 for in-process.
        start_timeout: seconds to wait for a worker to build its env.

    Use it as a context manager or call :meth:`close`; workers also stop when this process exits.
    """

    uses_state = True
    context_frames = 1

    def __init__(
        self, env_factory: Callable[[], gymnasium.Env], workers: int = 1, start_timeout: float = 300.0
    ) -> None:
        if not callable(env_factory):
            raise TypeError(
                f"env_factory must be callable (e.g. the env class), got {type(env_factory).__name__}"
            )
        if not is_int(workers) or workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {workers!r}")
        workers = int(workers)
        self.workers = workers
        self._env: gymnasium.Env | None = None
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        if workers == 0:
            self._env = env_factory()
            _check_state_api(self._env)
            self._env.reset(seed=0)
            self.action_space: spaces.Space = self._env.unwrapped.action_space
            return
        ctx = get_context("spawn")
        try:
            for _ in range(workers):
                parent_end, child_end = ctx.Pipe()
                proc = ctx.Process(
                    target=_worker_main, args=(child_end, os.getpid(), env_factory), daemon=True
                )
                proc.start()
                child_end.close()
                self._procs.append(proc)
                self._conns.append(parent_end)
            # Envs are built in parallel; wait for all of them.
            answers = [self._receive(i, start_timeout) for i in range(workers)]
        except BaseException:
            self.close()
            raise
        self.action_space = answers[0]

    def _receive(self, i: int, timeout: float | None = None) -> Any:
        """The next answer of worker i; raises if it reports an error, dies or times out."""
        conn, proc = self._conns[i], self._procs[i]
        ready = wait([conn, proc.sentinel], timeout)
        if conn not in ready:
            if proc.sentinel not in ready:
                raise TimeoutError(f"simulator worker {i} did not answer within {timeout} s")
            proc.join(timeout=5)  # the sentinel fires as the process exits, a moment before it can be reaped
            raise RuntimeError(f"simulator worker {i} died (exit code {proc.exitcode})")
        try:
            kind, payload = conn.recv()
        except EOFError:
            raise RuntimeError(f"simulator worker {i} died (exit code {proc.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"simulator worker {i} failed:\n{payload}")
        return payload

    def rollout(self, context: np.ndarray | None, actions: np.ndarray, state: Any = None) -> np.ndarray:
        """See :meth:`Dynamics.rollout`; ``context`` is ignored, ``state`` is required."""
        if state is None:
            raise ValueError(
                "SimulatorDynamics restarts the simulator from a state: pass state=env.unwrapped.get_state() "
                "(a learned WorldModelDynamics plans from context frames instead)"
            )
        actions = check_actions(actions, self.action_space)
        batch, _ = _check_batch(actions)
        if self._env is not None:
            return _simulate(self._env, state, actions)
        if not self._conns:
            raise RuntimeError("SimulatorDynamics is closed")
        try:  # checked here: a send that fails to pickle would otherwise take the whole pool down
            pickle.dumps(state)
        except Exception as e:
            raise ValueError(
                f"state cannot be sent to the simulator workers ({type(e).__name__}: {e})"
            ) from e
        blocks = [b for b in np.array_split(np.arange(batch), min(self.workers, batch)) if len(b)]
        try:
            for i, block in enumerate(blocks):
                if not self._procs[i].is_alive():
                    raise RuntimeError(f"simulator worker {i} died (exit code {self._procs[i].exitcode})")
                self._conns[i].send(("rollout", state, actions[block]))
            # Collect every answer before raising: a worker's own error leaves the pool usable.
            results, error = [], None
            for i in range(len(blocks)):
                try:
                    results.append(self._receive(i))
                except RuntimeError as e:
                    if not self._procs[i].is_alive():
                        raise
                    error = error or e
        except (RuntimeError, OSError) as e:
            if all(proc.is_alive() for proc in self._procs):
                raise
            # A dead worker leaves the others' answers unread in their pipes: close the pool rather than
            # let a later call read a stale reply.
            self.close()
            raise RuntimeError(f"{e}; the simulator pool is closed, build a new SimulatorDynamics") from e
        except BaseException:  # interrupted mid-call (KeyboardInterrupt, ...): replies may be left unread
            self._stop(grace=0.0)  # the workers are busy with answers nobody reads: no point waiting for them
            raise
        if error is not None:
            raise error
        return np.concatenate(results)

    def close(self) -> None:
        """Stop the workers (or close the in-process env); idempotent."""
        self._stop(grace=10.0)

    def _stop(self, grace: float) -> None:
        """Ask every worker to close, wait up to ``grace`` seconds for all of them together, terminate the rest."""
        if self._env is not None:
            self._env.close()
            self._env = None
        for conn in self._conns:
            try:
                conn.send(("close",))
            except (OSError, ValueError):
                pass  # already gone
        deadline = time.monotonic() + grace
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def __enter__(self) -> SimulatorDynamics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown: nothing left to report to


def make_dynamics(
    bundle: AdaWorldBundle | str | os.PathLike | None = None,
    env_factory: Callable[[], gymnasium.Env] | None = None,
    **kwargs: Any,
) -> WorldModelDynamics | SimulatorDynamics:
    """A learned model (``bundle``) or the simulator oracle (``env_factory``); exactly one must be given.

    Extra keyword arguments go to :class:`WorldModelDynamics` or :class:`SimulatorDynamics`.
    """
    if bundle is not None and env_factory is not None:
        raise ValueError(
            "give either a bundle (learned world model) or an env_factory (simulator oracle), not both"
        )
    if bundle is not None:
        return WorldModelDynamics(bundle, **kwargs)
    if env_factory is not None:
        return SimulatorDynamics(env_factory, **kwargs)
    raise ValueError(
        "no dynamics to plan with: give a bundle (a learned world model: AdaWorldBundle or its directory) or an "
        "env_factory (the real simulator, restored with set_state)"
    )
