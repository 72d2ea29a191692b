"""Goal-image planning: dynamics (learned world model or simulator oracle), costs, MPPI / CEM, and the MPC loop.

* :mod:`~adaworld_gym.planning.dynamics`: :class:`Dynamics` protocol, :class:`WorldModelDynamics`,
  :class:`SimulatorDynamics`, :func:`make_dynamics`.
* :mod:`~adaworld_gym.planning.costs`: VP2's summed pixel MSE, AdaWorld's RGB cosine, best-step variants.
* :mod:`~adaworld_gym.planning.planners`: :class:`MPPIPlanner` (VP2's defaults), :class:`CEMPlanner` (Box and
  Discrete; AdaWorld's Procgen defaults).
* :mod:`~adaworld_gym.planning.mpc`: :func:`run_mpc_episode`, closed-loop control in a real env.

torch and the models are imported only when a :class:`WorldModelDynamics` is built, so simulator workers and
pure-simulator planning start quickly.
"""

from adaworld_gym.planning.costs import (
    ADAWORLD_COST,
    ADAWORLD_TIEBREAK_COST,
    VP2_COST,
    CostFn,
    GoalCost,
    pixel_sse,
    rgb_cosine,
    sanitize_costs,
)
from adaworld_gym.planning.dynamics import (
    Dynamics,
    SimulatorDynamics,
    WorldModelDynamics,
    check_actions,
    make_dynamics,
)
from adaworld_gym.planning.mpc import (
    PROCGEN_MOVE_ACTIONS,
    PROCGEN_NOOP_ACTION,
    MPCEpisode,
    SuccessFn,
    procgen_success,
    push_success_fn,
    run_mpc_episode,
)
from adaworld_gym.planning.planners import (
    PUSH_INIT_STD,
    CEMPlanner,
    MPPIPlanner,
    Planner,
    correlated_noise,
    default_init_std,
)

__all__ = [
    "ADAWORLD_COST",
    "ADAWORLD_TIEBREAK_COST",
    "PROCGEN_MOVE_ACTIONS",
    "PROCGEN_NOOP_ACTION",
    "PUSH_INIT_STD",
    "VP2_COST",
    "CEMPlanner",
    "CostFn",
    "Dynamics",
    "GoalCost",
    "MPCEpisode",
    "MPPIPlanner",
    "Planner",
    "SimulatorDynamics",
    "SuccessFn",
    "WorldModelDynamics",
    "check_actions",
    "correlated_noise",
    "default_init_std",
    "make_dynamics",
    "pixel_sse",
    "procgen_success",
    "push_success_fn",
    "rgb_cosine",
    "run_mpc_episode",
    "sanitize_costs",
]
