"""VP2's robosuite push scene (``PushCenterMulti``) rebuilt on robosuite 1.5 / MuJoCo 3 as a Gymnasium env.

The scene (Panda, 0.8 m table, four plain-coloured objects, camera ``agentview_shift_2``) is built with robosuite's
model classes. Stepping bypasses robosuite's per-substep Python machinery: one action is 500 physics substeps, and
robosuite's composite controller costs several times the physics itself on this machine, so the OSC_POSITION law is evaluated
here with the same equations and gains (tests check it against robosuite's own controller). Frames are rendered with
``mujoco.Renderer`` at ``render_size`` and downscaled to 64x64 with area interpolation.

State handling uses MuJoCo's ``mjSTATE_INTEGRATION`` vector (time, qpos, qvel, ctrl, solver warm start, ...), which
is everything a step depends on: the controller's goal is recomputed from the state at every action and its
orientation goal and null-space posture are constants, so ``set_state`` + the same actions reproduces frames exactly.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import warnings
import weakref

# Software GL either way (no GPU). EGL (llvmpipe) renders as fast as OSMesa here, and under OSMesa the physics loop
# also ran several times slower in CPU time. mujoco reads this at its first import, so it must come first.
if "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ:
    warnings.warn(
        "mujoco was imported before adaworld_gym.sims.push without MUJOCO_GL set; off-screen rendering will "
        "probably fail. Set MUJOCO_GL=egl or import this module first.",
        stacklevel=2,
    )
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] == "osmesa":
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces
from tqdm.auto import tqdm


def _import_robosuite() -> None:
    """Import robosuite without its import-time warnings (no private macros file, optional robosuite_models and
    mink IK): they concern features this scene does not use."""

    class _BelowError(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.ERROR

    logger = logging.getLogger("robosuite_logs")
    quiet = _BelowError()
    logger.addFilter(quiet)
    try:
        import robosuite  # noqa: F401
    finally:
        logger.removeFilter(quiet)
    # robosuite logs every controller-config load at INFO; keep warnings and errors only.
    logger.setLevel(logging.WARNING)


_import_robosuite()

from robosuite.controllers import load_part_controller_config  # noqa: E402
from robosuite.controllers.composite.composite_controller_factory import (  # noqa: E402
    refactor_composite_controller_config,
)
from robosuite.environments.manipulation.manipulation_env import ManipulationEnv  # noqa: E402
from robosuite.models.arenas import TableArena  # noqa: E402
from robosuite.models.objects import BallObject, BoxObject, CylinderObject  # noqa: E402
from robosuite.models.tasks import ManipulationTask  # noqa: E402
from robosuite.utils.numba import jit_decorator  # noqa: E402

from adaworld_gym._checks import is_int, reset_options  # noqa: E402
from adaworld_gym.registration import PUSH_EPISODE_STEPS  # noqa: E402

__all__ = [
    "CAMERA_NAME",
    "NUM_OBJECTS",
    "PushTask",
    "RobosuitePushEnv",
    "ScriptedPusher",
    "make_push_tasks",
    "max_object_distance",
    "object_positions_from_state",
    "push_success",
]

TABLE_SIZE = (0.8, 0.8, 0.05)
TABLE_TOP = np.array([0.0, 0.0, 0.8])
CAMERA_NAME = "agentview_shift_2"
CAMERA_POS = (0.67589, 0.0, 1.25127)
CAMERA_QUAT_WXYZ = (0.63260, 0.31594, 0.31594, 0.63260)
CAMERA_FOVY = 45.0
OBS_SIZE = 64
CONTROL_FREQ = 1  # Hz: one action = 1 s = 500 substeps of 0.002 s
OBJECT_DENSITY = 1000.0
OBJECT_FRICTION = (0.7, 0.005, 0.0001)
# Object centres are sampled in this box around the table centre (VP2's ranges).
PLACEMENT_X = (-0.1, 0.3)
PLACEMENT_Y = (-0.15, 0.15)
SUCCESS_THRESHOLD = 0.05


@dataclass(frozen=True)
class _ObjectSpec:
    name: str
    kind: str  # "box", "cylinder" or "ball"
    # robosuite sizes: box half-extents, cylinder (radius, half-length), ball (radius,)
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float]

    @property
    def half_height(self) -> float:
        return self.size[-1] if self.kind != "box" else self.size[2]

    @property
    def footprint_radius(self) -> float:
        """Radius of the object's horizontal bounding circle, used to keep placements apart."""
        return float(np.hypot(self.size[0], self.size[1])) if self.kind == "box" else self.size[0]


OBJECTS = (
    _ObjectSpec("cube", "box", (0.06, 0.06, 0.06), (0.85, 0.15, 0.15, 1.0)),
    _ObjectSpec("small_cube", "box", (0.04, 0.04, 0.04), (0.15, 0.7, 0.2, 1.0)),
    _ObjectSpec("cylinder", "cylinder", (0.06, 0.06), (0.15, 0.3, 0.9, 1.0)),
    _ObjectSpec("ball", "ball", (0.07,), (0.95, 0.8, 0.1, 1.0)),
)
NUM_OBJECTS = len(OBJECTS)

# Layout of the mjSTATE_INTEGRATION vector for this model; fixed by the model and checked when an env is built.
# qpos: 7 arm joints, 2 finger joints, then one free joint (xyz + quat) per object in OBJECTS order.
_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
_STATE_QPOS_START = 1  # the state vector starts with time
_OBJECT_QPOS_ADR = (9, 16, 23, 30)
STATE_SIZE = 334

_ARM_DOF = 7
_NULLSPACE_KP = 10.0  # robosuite's null-space posture gain (control_utils.nullspace_torques)


def _osc_position_config() -> dict[str, Any]:
    """robosuite 1.5 composite config for VP2's controller: OSC_POSITION, delta, kp 150, damping ratio 1, output
    0.05 m per unit action, no interpolation, deltas in the world frame (1.5 defaults to the robot base frame)."""
    part = load_part_controller_config(default_controller="OSC_POSITION")
    part.update(
        input_type="delta",
        input_ref_frame="world",
        kp=150,
        damping_ratio=1,
        impedance_mode="fixed",
        input_max=1,
        input_min=-1,
        output_max=[0.05] * 3,
        output_min=[-0.05] * 3,
        interpolation=None,
    )
    return refactor_composite_controller_config(part, "Panda", ["right"])


class _PushScene(ManipulationEnv):
    """The robosuite side: model construction (robot, table, objects, camera) and the robot's controller."""

    def __init__(self) -> None:
        super().__init__(
            robots="Panda",
            controller_configs=_osc_position_config(),
            initialization_noise=None,
            use_camera_obs=False,
            has_renderer=False,
            has_offscreen_renderer=False,  # frames come from our own mujoco.Renderer
            control_freq=CONTROL_FREQ,
            horizon=10**9,
            ignore_done=True,
            hard_reset=False,
            camera_names=[],
            renderer="mujoco",
        )

    def _load_model(self) -> None:
        super()._load_model()
        robot_model = self.robots[0].robot_model
        robot_model.set_base_xpos(robot_model.base_xpos_offset["table"](TABLE_SIZE[0]))
        arena = TableArena(table_full_size=TABLE_SIZE, table_offset=TABLE_TOP)
        arena.set_origin([0, 0, 0])
        arena.set_camera(CAMERA_NAME, CAMERA_POS, CAMERA_QUAT_WXYZ, camera_attribs={"fovy": str(CAMERA_FOVY)})
        classes = {"box": BoxObject, "cylinder": CylinderObject, "ball": BallObject}
        self.objects = [
            classes[spec.kind](
                name=spec.name,
                size=list(spec.size),
                rgba=list(spec.rgba),
                density=OBJECT_DENSITY,
                friction=list(OBJECT_FRICTION),
            )
            for spec in OBJECTS
        ]
        self.model = ManipulationTask(
            mujoco_arena=arena, mujoco_robots=[robot_model], mujoco_objects=self.objects
        )

    def _check_robot_configuration(self, robots: list[str]) -> None:
        if len(robots) != 1:
            raise ValueError("the push scene takes exactly one robot")

    def reward(self, action: np.ndarray | None = None) -> float:
        return 0.0


@jit_decorator
def _osc_kernel(
    mass: np.ndarray,
    jacp: np.ndarray,
    jacr: np.ndarray,
    qpos: np.ndarray,
    qvel: np.ndarray,
    bias: np.ndarray,
    pos: np.ndarray,
    ori: np.ndarray,
    goal_pos: np.ndarray,
    goal_ori: np.ndarray,
    null_q0: np.ndarray,
    kp: np.ndarray,
    kd: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> np.ndarray:
    """robosuite 1.5's OSC torques (osc.py ``run_controller`` with uncoupled position/orientation, null-space
    posture and gravity compensation), written as one compiled function: it runs 500 times per action."""
    mass = mass.copy()  # a contiguous copy of the arm block makes the products below fast
    jac = np.empty((6, mass.shape[0]))
    jac[:3] = jacp
    jac[3:] = jacr
    ee_vel = jac @ qvel
    force = kp[:3] * (goal_pos - pos) - kd[:3] * ee_vel[:3]
    # robosuite's orientation_error: half the summed cross products of current and desired frame axes.
    ori_err = 0.5 * (
        np.cross(ori[:, 0], goal_ori[:, 0])
        + np.cross(ori[:, 1], goal_ori[:, 1])
        + np.cross(ori[:, 2], goal_ori[:, 2])
    )
    torque = kp[3:] * ori_err - kd[3:] * ee_vel[3:]
    lam_inv = jac @ np.linalg.solve(mass, np.ascontiguousarray(jac.T))
    wrench = np.empty(6)
    wrench[:3] = np.linalg.solve(lam_inv[:3, :3].copy(), force)
    wrench[3:] = np.linalg.solve(lam_inv[3:, 3:].copy(), torque)
    # Null-space posture torques N^T M y with N = I - M^-1 J^T Lambda J, i.e. M y - J^T Lambda J y.
    null_kp = _NULLSPACE_KP
    posture = null_kp * (null_q0 - qpos) - 2.0 * np.sqrt(null_kp) * qvel
    null = mass @ posture - jac.T @ np.linalg.solve(lam_inv, jac @ posture)
    return np.minimum(np.maximum(jac.T @ wrench + bias + null, low), high)


class RobosuitePushEnv(gymnasium.Env):
    """VP2's four-object push scene: 64x64 RGB observations, 4-D delta end-effector actions.

    Action ``(dx, dy, dz, gripper)`` in [-1, 1]; each unit moves the OSC goal 0.05 m from the current end-effector
    position. The gripper is held closed and ``action[3]`` is ignored. Reward is 0 unless ``reset`` got a
    ``"goal_state"`` option, then it is minus the largest 3-D distance of an object from its goal position.

    Args:
        render_size: Side of the square frame rendered before downscaling to 64x64.
        episode_steps: If given, ``truncated`` becomes True after this many steps (``gymnasium.make`` adds the
            registered 15-step limit itself).
        render_mode: Only ``"rgb_array"`` (or None) is supported.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}

    def __init__(
        self, render_size: int = 256, episode_steps: int | None = None, render_mode: str | None = "rgb_array"
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; only 'rgb_array'")
        if render_size < OBS_SIZE:
            raise ValueError(f"render_size must be >= {OBS_SIZE}, got {render_size}")
        if episode_steps is not None and (not is_int(episode_steps) or episode_steps < 1):
            raise ValueError(f"episode_steps must be an integer >= 1 (or None), got {episode_steps!r}")
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.episode_steps = episode_steps
        self.observation_space = spaces.Box(0, 255, (OBS_SIZE, OBS_SIZE, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

        self._scene = _PushScene()
        self._scene.reset()
        sim = self._scene.sim
        self._model: mujoco.MjModel = sim.model._model
        self._data: mujoco.MjData = sim.data._data
        self._check_layout()
        self._setup_control()
        self._setup_renderer()
        _track_for_exit(self)
        self._home_state = self.get_state()

        self._goal_positions: np.ndarray | None = None
        self._steps = 0
        self._frame: np.ndarray | None = None  # rendered lazily after set_state
        self._started = False  # until reset() or set_state(), the objects overlap at the world origin

    # ----------------------------------------------------------------------------------------------- setup

    def _check_layout(self) -> None:
        """Fail loudly if robosuite ever lays the model out differently from the module-level constants."""
        adrs = tuple(
            int(self._scene.sim.model.get_joint_qpos_addr(o.joints[0])[0]) for o in self._scene.objects
        )
        size = mujoco.mj_stateSize(self._model, _STATE_SPEC)
        if adrs != _OBJECT_QPOS_ADR or size != STATE_SIZE:
            raise RuntimeError(f"unexpected model layout: object qpos {adrs}, state size {size}")

    def _setup_control(self) -> None:
        robot = self._scene.robots[0]
        osc = robot.part_controllers["right"]
        m = self._model
        if list(osc.qvel_index) != list(range(_ARM_DOF)) or list(osc.qpos_index) != list(range(_ARM_DOF)):
            raise RuntimeError("expected the arm joints first in qpos/qvel")
        self._osc = osc  # robosuite's controller: kept for its constants and as the reference in tests
        self._site_id = int(m.site(osc.ref_name).id)
        self._kp = np.asarray(osc.kp, dtype=np.float64)
        self._kd = np.asarray(osc.kd, dtype=np.float64)
        self._null_q0 = np.array(osc.initial_joint, dtype=np.float64)
        self._arm_act = np.asarray(robot._ref_actuators_indexes_dict["right"])
        self._arm_ctrl_range = m.actuator_ctrlrange[self._arm_act].T.copy()
        # Hold the gripper closed: ask robosuite's own pipeline for the saturated "close" command (its gripper
        # command moves by a fixed speed per call, so a few calls saturate it) and reuse that ctrl forever.
        gripper_act = np.asarray(robot._ref_actuators_indexes_dict[robot.get_gripper_name("right")])
        for _ in range(20):
            robot.control(np.array([0.0, 0.0, 0.0, 1.0]), policy_step=True)
        self._gripper_act = gripper_act
        self._gripper_ctrl = self._data.ctrl[gripper_act].copy()
        # Metres of end-effector goal offset per unit action (output_max / input_max = 0.05); robosuite computes
        # it on the first command, i.e. in the calls just above.
        self.action_scale = float(np.asarray(osc.action_scale).max())
        # Start with the fingers closed, the arm at home, and the orientation goal fixed to home (gripper down),
        # as robosuite 1.3's OSC_POSITION held a fixed orientation.
        d = self._data
        d.qpos[_ARM_DOF : _ARM_DOF + 2] = 0.0
        d.qvel[:] = 0.0
        d.ctrl[:] = 0.0
        d.ctrl[gripper_act] = self._gripper_ctrl
        mujoco.mj_forward(m, d)
        self._goal_ori = d.site_xmat[self._site_id].reshape(3, 3).copy()
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))
        self._mass = np.zeros((m.nv, m.nv))

    def _setup_renderer(self) -> None:
        m = self._model
        # No MSAA (the area downscale anti-aliases) and no mirror pass: each roughly doubles software GL time.
        m.vis.quality.offsamples = 0
        self._renderer = mujoco.Renderer(m, self.render_size, self.render_size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[0] = 0  # robosuite collision geoms; only visual geoms are drawn
        self._camera_id = int(m.camera(CAMERA_NAME).id)

    # ----------------------------------------------------------------------------------------- gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode from a fresh random layout, or from ``options["state"]``.

        Args:
            seed: Seeds ``self.np_random``, the only source of placement randomness.
            options: Optional ``"state"`` (a ``get_state()`` vector to start from) and ``"goal_state"`` (enables the
                distance reward).

        Returns:
            The first 64x64 frame and the info dict.
        """
        self._check_open()
        super().reset(seed=seed)
        options = reset_options(options, ("state", "goal_state"))
        self._goal_positions = None
        if options.get("goal_state") is not None:
            goal_state = _validate_state(options["goal_state"], "options['goal_state']")
            self._goal_positions = object_positions_from_state(goal_state)
        if options.get("state") is not None:
            self._set_state_unchecked(_validate_state(options["state"], "options['state']"))
        else:
            self._set_state_unchecked(self._home_state)
            self._place_objects()
        self._steps = 0
        self._started = True
        self._frame = frame = self._render_frame()
        return frame.copy(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one 4-D action for 1 s of simulation (500 substeps) and render."""
        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() (or set_state()) before step()")
        delta = self._validate_action(action)[:3] * self.action_scale
        self._simulate(delta)
        self._steps += 1
        self._frame = frame = self._render_frame()
        truncated = self.episode_steps is not None and self._steps >= self.episode_steps
        return frame.copy(), self._reward(), False, truncated, self._info()

    def render(self) -> np.ndarray | None:
        """Return the current 64x64 frame (None when the env was made with ``render_mode=None``)."""
        if self.render_mode is None:
            return None
        if self._frame is None:
            self._frame = self._render_frame()
        return self._frame.copy()

    def close(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self._renderer = None

    def __getstate__(self) -> dict[str, Any]:
        # robosuite's scene and the GL renderer cannot be copied; unguarded, deepcopy fails on a GL buffer.
        raise TypeError(
            "a RobosuitePushEnv cannot be pickled or copied: copy its simulator with get_state() and restore it "
            "in a new env with set_state() or reset(options={'state': ...})"
        )

    # ------------------------------------------------------------------------------------------ state API

    def get_state(self) -> np.ndarray:
        """Flattened full simulator state (float64 ``[STATE_SIZE]``)."""
        state = np.empty(STATE_SIZE, dtype=np.float64)
        mujoco.mj_getState(self._model, self._data, state, _STATE_SPEC)
        return state

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from ``get_state()`` (~0.1 ms; the frame is rendered on the next ``render()``).

        The state holds the simulator only: ``episode_steps`` counts again from the restore (the planner's
        simulator workers restore one state per candidate, and a count carried across them froze later ones).

        Raises:
            ValueError: If ``state`` is not a finite vector of length ``STATE_SIZE``.
        """
        self._set_state_unchecked(_validate_state(state, "state"))
        self._steps = 0
        self._started = True
        self._frame = None

    def object_positions(self) -> np.ndarray:
        """Centres of the four objects, ``[4, 3]`` float64, in OBJECTS order (cube, small cube, cylinder, ball)."""
        return np.stack([self._data.qpos[a : a + 3] for a in _OBJECT_QPOS_ADR]).astype(np.float64)

    def eef_position(self) -> np.ndarray:
        """End-effector (grip site) position ``[3]``."""
        return self._data.site_xpos[self._site_id].copy()

    # ------------------------------------------------------------------------------------------- internals

    def _set_state_unchecked(self, state: np.ndarray) -> None:
        mujoco.mj_setState(self._model, self._data, state, _STATE_SPEC)
        mujoco.mj_forward(self._model, self._data)

    def _place_objects(self) -> None:
        """Uniform, non-overlapping placements with random yaw, all drawn from ``self.np_random``."""
        rng = self.np_random
        while True:
            centres: list[np.ndarray] = []
            for spec in OBJECTS:
                for _ in range(100):
                    xy = np.array([rng.uniform(*PLACEMENT_X), rng.uniform(*PLACEMENT_Y)])
                    if all(
                        np.linalg.norm(xy - c) > spec.footprint_radius + other.footprint_radius
                        for c, other in zip(centres, OBJECTS[: len(centres)], strict=True)
                    ):
                        centres.append(xy)
                        break
                else:
                    break  # this object does not fit: start the layout again
            if len(centres) == NUM_OBJECTS:
                break
        for adr, spec, xy in zip(_OBJECT_QPOS_ADR, OBJECTS, centres, strict=True):
            yaw = rng.uniform(0.0, 2.0 * np.pi)
            pos = [TABLE_TOP[0] + xy[0], TABLE_TOP[1] + xy[1], TABLE_TOP[2] + spec.half_height]
            self._data.qpos[adr : adr + 7] = [*pos, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        mujoco.mj_forward(self._model, self._data)

    def _validate_action(self, action: Any) -> np.ndarray:
        if np.iscomplexobj(action):
            raise ValueError("action must be real, got complex values")
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"action must be numeric, got {type(action).__name__}: {err}") from None
        if arr.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"action must be finite, got {arr}")
        if np.any(np.abs(arr) > 1.0 + 1e-6):
            raise ValueError(f"action must lie in [-1, 1], got {arr}")
        return np.clip(arr, -1.0, 1.0)

    def _simulate(self, delta: np.ndarray) -> None:
        """500 substeps of OSC position control towards ``eef + delta`` (goal fixed at the first substep)."""
        m, d = self._model, self._data
        goal_pos = None
        for _ in range(int(round(1.0 / (CONTROL_FREQ * m.opt.timestep)))):
            mujoco.mj_step1(m, d)
            if goal_pos is None:
                goal_pos = d.site_xpos[self._site_id] + delta
            d.ctrl[self._arm_act] = self._osc_torques(goal_pos)
            mujoco.mj_step2(m, d)
        # Bring derived quantities (body poses) up to date with the integrated state, for rendering and readers.
        mujoco.mj_forward(m, d)

    def _osc_torques(self, goal_pos: np.ndarray) -> np.ndarray:
        """Arm torques from robosuite 1.5's OSC law for the current (post ``mj_step1``) data."""
        m, d, n = self._model, self._data, _ARM_DOF
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._site_id)
        mujoco.mj_fullM(m, self._mass, d.qM)
        return _osc_kernel(
            self._mass[:n, :n],
            self._jacp[:, :n],
            self._jacr[:, :n],
            d.qpos[:n],
            d.qvel[:n],
            d.qfrc_bias[:n],
            d.site_xpos[self._site_id],
            d.site_xmat[self._site_id].reshape(3, 3),
            goal_pos,
            self._goal_ori,
            self._null_q0,
            self._kp,
            self._kd,
            self._arm_ctrl_range[0],
            self._arm_ctrl_range[1],
        )

    def _check_open(self) -> None:
        # close() frees the GL renderer; without this, reset or render after it fail on a None attribute.
        if getattr(self, "_renderer", None) is None:
            raise RuntimeError("this RobosuitePushEnv is closed; make a new one")

    def _render_frame(self) -> np.ndarray:
        self._check_open()
        self._renderer.update_scene(self._data, camera=self._camera_id, scene_option=self._scene_option)
        # mujoco.Renderer already flips OpenGL's bottom-up rows: the image is upright.
        image = self._renderer.render()
        return cv2.resize(image, (OBS_SIZE, OBS_SIZE), interpolation=cv2.INTER_AREA)

    def _reward(self) -> float:
        if self._goal_positions is None:
            return 0.0
        return -float(np.linalg.norm(self.object_positions() - self._goal_positions, axis=1).max())

    def _info(self) -> dict[str, Any]:
        return {"object_positions": self.object_positions(), "eef_position": self.eef_position()}


# Envs whose GL context is still open. mujoco's EGL backend terminates its display in an exit hook registered when
# the first context is made; renderers garbage-collected after that print errors from their destructors. An exit
# hook registered after that one runs before it and closes them cleanly.
_LIVE_ENVS: weakref.WeakSet[RobosuitePushEnv] = weakref.WeakSet()


def _close_live_envs() -> None:
    for env in list(_LIVE_ENVS):
        env.close()


def _track_for_exit(env: RobosuitePushEnv) -> None:
    if not _LIVE_ENVS:
        atexit.unregister(_close_live_envs)
        atexit.register(_close_live_envs)
    _LIVE_ENVS.add(env)


# ---------------------------------------------------------------------------------------- state functions


def _validate_state(state: Any, name: str) -> np.ndarray:
    arr = np.asarray(state, dtype=np.float64)
    if arr.shape != (STATE_SIZE,):
        raise ValueError(
            f"{name} must be a flat vector of {STATE_SIZE} floats from get_state(), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def object_positions_from_state(state: np.ndarray) -> np.ndarray:
    """Object centres ``[4, 3]`` (OBJECTS order) read from a ``get_state()`` vector, without an env."""
    arr = _validate_state(state, "state")
    return np.stack([arr[_STATE_QPOS_START + a : _STATE_QPOS_START + a + 3] for a in _OBJECT_QPOS_ADR])


def max_object_distance(state: np.ndarray, goal_state: np.ndarray) -> float:
    """VP2's score of a state: the largest 3-D distance of an object from its position in ``goal_state``."""
    diff = object_positions_from_state(state) - object_positions_from_state(goal_state)
    return float(np.linalg.norm(diff, axis=1).max())


def objects_on_table(positions: np.ndarray) -> bool:
    """Whether every object (``[NUM_OBJECTS, 3]`` positions) is still above the table top: none has fallen off."""
    return bool(np.all(positions[:, 2] > TABLE_TOP[2]))


def push_success(state: np.ndarray, goal_state: np.ndarray, threshold: float = SUCCESS_THRESHOLD) -> bool:
    """True if every object is within ``threshold`` metres of its goal position."""
    return max_object_distance(state, goal_state) < threshold


# -------------------------------------------------------------------------------------- scripted pusher


class ScriptedPusher:
    """VP2's scripted demonstrator: push one object about 0.3 m in a random direction away from the robot.

    The push target is 0.3 m from the object's initial position in a random direction with a non-negative x
    component (away from the robot), clipped to +-0.35 m around the table centre. The end effector travels above
    the objects to a point 0.22 m behind the object (on the line from the target through the object), lowers to
    just above the table and pushes through the object towards the target. Gaussian noise is added to every action.

    Args:
        target_object: Index of the object to push (OBJECTS order).
        np_random: Source of the push direction and of the action noise.
        noise_std: Standard deviation of the action noise, in action units.
        retarget: Once the end effector reaches the push target, move on to the next object (index + 1) and push
            it too, instead of resting there; the collector uses this so long episodes keep showing pushes.
    """

    BEHIND = 0.22
    PUSH_DISTANCE = 0.3
    TARGET_LIMIT = 0.35
    HOVER_Z = TABLE_TOP[2] + 0.17  # grip site height that clears the tallest object (ball top at +0.14)
    PUSH_Z = TABLE_TOP[2] + 0.03  # grip site height while pushing: fingertips just above the table
    REACHED_XY = 0.04  # start lowering when this close (m) to the point behind the object
    CLEARANCE = 0.03  # free space (m) wanted around the fingers where they come down
    MAX_REDRAWS = 10

    def __init__(
        self,
        target_object: int,
        np_random: np.random.Generator,
        noise_std: float = 0.05,
        retarget: bool = False,
    ) -> None:
        if not 0 <= target_object < NUM_OBJECTS:
            raise ValueError(f"target_object must be in [0, {NUM_OBJECTS}), got {target_object}")
        self.target_object = int(target_object)
        self.np_random = np_random
        self.noise_std = float(noise_std)
        self.retarget = bool(retarget)
        self.target_xy: np.ndarray | None = None
        self.pushing = False

    def _choose_target(self, positions: np.ndarray) -> None:
        """Draw the push target; redraw (a few times) when the point behind the object is taken by another one,
        where the gripper would land on that object instead of reaching the table."""
        obj_xy = positions[self.target_object, :2]
        for _ in range(self.MAX_REDRAWS):
            angle = self.np_random.uniform(-np.pi / 2, np.pi / 2)
            offset = self.PUSH_DISTANCE * np.array([np.cos(angle), np.sin(angle)])
            target = (
                np.clip(obj_xy - TABLE_TOP[:2] + offset, -self.TARGET_LIMIT, self.TARGET_LIMIT)
                + TABLE_TOP[:2]
            )
            direction = (target - obj_xy) / max(float(np.linalg.norm(target - obj_xy)), 1e-6)
            behind = obj_xy - self.BEHIND * direction
            if all(
                np.linalg.norm(behind - positions[i, :2]) > OBJECTS[i].footprint_radius + self.CLEARANCE
                for i in range(NUM_OBJECTS)
                if i != self.target_object
            ):
                break
        self.target_xy = target
        self._direction = direction

    def act(self, env: RobosuitePushEnv) -> np.ndarray:
        """Next action ``[4]`` float32 in [-1, 1] for the env's current state."""
        positions = env.object_positions()
        obj_xy = positions[self.target_object, :2]
        eef = env.eef_position()
        if self.target_xy is None:
            self._choose_target(positions)
        if self.retarget and self.pushing and np.linalg.norm(eef[:2] - self.target_xy) < self.REACHED_XY:
            self.target_object = (self.target_object + 1) % NUM_OBJECTS
            self.pushing = False
            obj_xy = positions[self.target_object, :2]
            self._choose_target(positions)

        if self.pushing:
            goal = np.array([*self.target_xy, self.PUSH_Z])
        else:
            behind = obj_xy - self.BEHIND * self._direction
            near = np.linalg.norm(eef[:2] - behind) < self.REACHED_XY
            goal = np.array([*behind, self.PUSH_Z if near else self.HOVER_Z])
            self.pushing = near and eef[2] < self.PUSH_Z + 0.03
        action = np.zeros(4)
        action[:3] = np.clip((goal - eef) / env.action_scale, -1.0, 1.0)
        action[:3] += self.np_random.normal(0.0, self.noise_std, 3)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------ push tasks


@dataclass
class PushTask:
    """One VP2 push instance: start from ``init_state`` and reach the object layout of ``goal_state``."""

    init_state: np.ndarray
    goal_state: np.ndarray
    goal_image: np.ndarray  # uint8 [64, 64, 3], the demo's final frame
    target_object: int
    demo_actions: np.ndarray  # float32 [T, 4]: the demo's own actions from init_state to goal_state


def push_tasks_digest(tasks: Sequence[PushTask]) -> str:
    """SHA-256 of the tasks' start and goal states, goal images, targets and demo actions, in order.

    ``make_push_tasks(n, seed)`` gives the same tasks for a seed on one kind of CPU, but MuJoCo rounds
    differently on others (AVX2 vs AVX-512 builds of its kernels), so the same seed can start some tasks
    elsewhere; benchmarks record this digest so that results on different tasks are never merged.
    """
    import hashlib

    digest = hashlib.sha256()
    for task in tasks:
        digest.update(str(int(task.target_object)).encode())
        for array in (task.init_state, task.goal_state, task.goal_image, task.demo_actions):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


MIN_PUSH_DISPLACEMENT = 0.08
# "approach": a task starts this many demo steps before the pusher is down behind its object (arm low, in view).
START_BEFORE_PUSH = 1
# "contact": a task starts at the last demo state before the target object has moved this far (m).
CONTACT_MOVE = 0.01
TASK_STARTS = ("approach", "contact")


def _start_index(start: str, push_step: int, states: list[np.ndarray], target: int) -> int | None:
    """Index of a task's first state in its demo's ``states`` (None: the demo has no such state)."""
    if start == "approach":
        return max(push_step - START_BEFORE_PUSH, 0)
    first = object_positions_from_state(states[0])[target]
    for index, state in enumerate(states):
        if np.linalg.norm(object_positions_from_state(state)[target] - first) > CONTACT_MOVE:
            return index - 1  # index >= 1: the first state is where the object starts
    return None  # the target never moved


def make_push_tasks(
    n: int, seed: int, env: RobosuitePushEnv | None = None, start: str = "approach"
) -> list[PushTask]:
    """Generate ``n`` push tasks from scripted 15-step demos, deterministically in ``seed``.

    Task ``i`` targets object ``i % 4``. Like VP2 (which stores a start index per task), a task starts mid-demo.
    From the demo's first state (the home pose) the arm is above the camera's view, every candidate renders the
    same image and a goal-image planner is blind, even with the simulator as its model. Where it starts:

    * ``"approach"`` (the default): ``START_BEFORE_PUSH`` steps before the pusher is down behind its object,
      0.22 m behind it. VP2's sampler (std 0.5, beta 0.5) rarely carries the arm that far: of the first
      replan's 32 candidates over VP2's horizon, 2% move any object closer on seed 0's ten tasks.
    * ``"contact"``: the last state before the target object has moved ``CONTACT_MOVE``, the pusher touching it;
      the rest of the push (0.1-0.28 m on seed 0's tasks) is left to the planner; 32% of those candidates move
      an object closer (``benchmarks/push_reach.py``, docs/planning.md).

    A demo is kept only if, from that start, some object moved more than 0.08 m and none fell below the table
    top; the goal is the demo's final state and frame. Both starts draw from the same sequence of demos, but a
    demo kept under one can be dropped under the other (too short a push left from the later start), after which
    the task lists differ.

    Args:
        n: Number of tasks.
        seed: Seed for layouts, push directions and action noise.
        env: Env to run the demos in (its state is overwritten); a private one is built and closed if None.
        start: ``"approach"`` or ``"contact"`` (above).

    Returns:
        The tasks, in order.

    Raises:
        RuntimeError: If demos keep failing (fewer than one kept per 50 attempts).
        ValueError: If ``start`` is not one of ``TASK_STARTS``.
    """
    if start not in TASK_STARTS:
        raise ValueError(f"start must be one of {TASK_STARTS}, got {start!r}")
    own_env = env is None
    env = RobosuitePushEnv() if env is None else env
    seeds = np.random.SeedSequence(seed)
    tasks: list[PushTask] = []
    attempts = 0
    try:
        with tqdm(total=n, desc="push tasks", unit="task", disable=n < 10) as progress:
            while len(tasks) < n:
                if attempts >= 50 * max(n, 1):
                    raise RuntimeError(f"only {len(tasks)} of {n} push demos kept after {attempts} attempts")
                attempts += 1
                target = len(tasks) % NUM_OBJECTS
                layout_seed, pusher_seed = seeds.spawn(2)
                env.reset(seed=int(layout_seed.generate_state(1)[0]))
                pusher = ScriptedPusher(target, np.random.default_rng(pusher_seed))
                states, actions = [env.get_state()], []
                push_step = None  # index of the first state the pusher pushes from
                for step in range(PUSH_EPISODE_STEPS):
                    action = pusher.act(env)
                    if pusher.pushing and push_step is None:
                        push_step = step
                    env.step(action)
                    states.append(env.get_state())
                    actions.append(action)
                if push_step is None:
                    continue  # never got down behind the object
                start_index = _start_index(start, push_step, states, target)
                if start_index is None:
                    continue
                init_state = states[start_index]
                begin = object_positions_from_state(init_state)
                end = env.object_positions()
                moved = np.linalg.norm(end - begin, axis=1).max() > MIN_PUSH_DISPLACEMENT
                if moved and objects_on_table(end):
                    demo = np.stack(actions[start_index:])
                    tasks.append(PushTask(init_state, env.get_state(), env.render(), target, demo))
                    progress.update(1)
    finally:
        if own_env:
            env.close()
    return tasks
