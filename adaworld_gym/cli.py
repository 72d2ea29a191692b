"""The ``adaworld`` command line."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from adaworld_gym.latent_bundle import ACTION_KINDS
from adaworld_gym.sims.games import ADAPTATION_GAMES, DISTRIBUTION_MODES, PRETRAIN_GAMES, PROCGEN_GAMES

# Commands whose work is checkpointed or skipped when already on disk, so a rerun carries on.
RESUMABLE_COMMANDS = {"collect", "train-lam", "train-wm", "train-reward", "adapt"}

# Named game sets for --games; "adaptation" = the four games held out of pretraining.
GAME_SETS = {"pretrain": PRETRAIN_GAMES, "adaptation": ADAPTATION_GAMES, "all": PROCGEN_GAMES}


def _report(message: str) -> None:
    """Print once per run: under ``accelerate launch`` / ``torchrun`` every process runs the command."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message)


def _games(text: str) -> list[str]:
    if text in GAME_SETS:
        return list(GAME_SETS[text])
    games = [g.strip().lower() for g in text.split(",") if g.strip()]
    if not games:  # "" (an unset shell variable) collected nothing and reported success
        raise argparse.ArgumentTypeError(f"no game given; name games or one of {', '.join(GAME_SETS)}")
    unknown = [g for g in games if g not in PROCGEN_GAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown Procgen game(s) {', '.join(unknown)}; known: {', '.join(PROCGEN_GAMES)}, "
            f"or one of {', '.join(GAME_SETS)}"
        )
    return list(dict.fromkeys(games))  # each game once: "coinrun,coinrun" collected it twice


def _cmd_collect(args: argparse.Namespace) -> None:
    from adaworld_gym.data import collect

    if args.source == "procgen":
        report = collect.collect_procgen(
            args.games,
            args.episodes,
            args.steps,
            args.out,
            levels=args.levels,
            distribution_mode=args.distribution_mode,
            seed=args.seed,
            batch=args.batch,
        )
    elif args.source == "push":
        report = collect.collect_push(
            args.episodes, args.out, steps=args.steps, seed=args.seed, workers=args.workers
        )
    else:
        report = collect.collect_videos(args.src, args.out, size=args.size, target_hz=args.hz)
    print(report)


def _model_settings(pairs: list[str], model_cls: type, own_flags: set[str]) -> dict:
    """Parse ``--set KEY=VALUE`` pairs (VALUE as JSON, else a string) into model config overrides."""
    import inspect
    import json

    allowed = set(inspect.signature(model_cls.__init__).parameters) - {"self"} - own_flags
    settings = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        if key not in allowed:
            raise ValueError(
                f"--set: {model_cls.__name__} has no setting {key!r}; known: {', '.join(sorted(allowed))}"
            )
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    return settings


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("a 2-D projection needs at least 2 samples")
    return value


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


MAX_PUSH_TASK = 999  # tasks are drawn in sequence, about a second each: task i makes i + 1 of them


def push_task_index(text: str) -> int:
    value = _int_at_least(text, 0, f"a task index in 0..{MAX_PUSH_TASK}")
    if value > MAX_PUSH_TASK:
        raise argparse.ArgumentTypeError(
            f"expected a task index in 0..{MAX_PUSH_TASK} (task i draws the i + 1 first tasks, about a "
            f"second each), got {value}"
        )
    return value


def seed_int(text: str) -> int:
    """A seed as numpy and torch both take it: an integer in 0..2**32-1."""
    value = _int_at_least(text, 0, "a seed, an integer in 0..2**32-1")
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer in 0..2**32-1, got {value}")
    return value


def _data_spec(args: argparse.Namespace):
    """``--data`` directories (checked to hold episodes before any training starts), or ``{directory: share}``
    when ``--shares`` is given."""
    from adaworld_gym.data.clips import find_subsets

    find_subsets(args.data)  # a missing or empty --data fails now, not after the run folder is written
    if args.shares is None:
        return args.data
    if len(args.shares) != len(args.data):
        raise ValueError(f"--shares has {len(args.shares)} values for {len(args.data)} --data directories")
    if not all(math.isfinite(s) and s >= 0 for s in args.shares) or sum(args.shares) <= 0:
        raise ValueError(f"--shares must be finite, >= 0 and with a positive sum, got {args.shares}")
    return {str(d): s for d, s in zip(args.data, args.shares, strict=True)}


def _cmd_train_lam(args: argparse.Namespace) -> None:
    from adaworld_gym.models.latent_action import LatentActionModel
    from adaworld_gym.training.lam import train_lam

    overrides = _model_settings(args.set, LatentActionModel, {"regularizer", "beta", "preset"})
    _check_run_dir(args.out)
    path = train_lam(
        _data_spec(args),
        args.out,
        preset=args.preset,
        regularizer=args.regularizer,
        beta=args.beta,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        seed=args.seed,
        model_overrides=overrides,
        lr=args.lr,
        batch_size=args.batch_size,
        init_from=args.init_from,
    )
    _report(f"latent action model saved to {path}")


def _load_lam(path: Path | None):
    """The given LAM (its model directory or the training run's directory), else the shipped one."""
    from adaworld_gym.defaults import DEFAULT_LAM, shipped
    from adaworld_gym.training.world_model import load_lam

    path = shipped(DEFAULT_LAM, "latent action model") if path is None else path
    if not Path(path).is_dir():
        raise ValueError(f"latent action model directory not found: {path}")
    return load_lam(path)


def _save_npy(array, path: Path) -> None:
    import io

    import numpy as np

    from adaworld_gym.data.episodes import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _load_npy(path: Path):
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        # numpy reads any file that is not .npy/.npz as a pickle, which it then refuses: say what it is not.
        reason = "not a .npy file" if "pickled data" in str(e) else e
        raise ValueError(f"cannot read latent actions from {path}: {reason}") from e
    if not isinstance(array, np.ndarray):  # an .npz archive under another name
        array.close()
        raise ValueError(f"cannot read latent actions from {path}: an .npz archive, not one .npy array")
    return array


def _check_out_file(path: Path, suffixes: tuple[str, ...] | None = None) -> None:
    """A bad --out (a directory, under a file, a wrong suffix) fails before the work, not after it."""
    from adaworld_gym.viz import check_output_file

    check_output_file(path, suffixes, "--out")


def _check_out_dir(path: Path) -> None:
    """An --out directory that is a file (or lies under one) fails with a message, not ``[Errno 17]``."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"--out {path}: {p} is a file, not a directory")
            return


def _check_run_dir(path: Path) -> None:
    """A training run's --out must not be a saved model, bundle or episode data (swapped arguments wrote runs
    into a LAM's weights folder or a data folder)."""
    from adaworld_gym.data.episodes import MANIFEST

    _check_out_dir(path)
    if not path.is_dir():
        return
    for marker, what in (
        ("config.json", "a saved model"),
        ("bundle.json", "a bundle"),
        (MANIFEST, "episode data"),
    ):
        if (path / marker).is_file():
            raise ValueError(f"--out {path} holds {what} ({marker}): give a run directory of its own")
    if any((child / MANIFEST).is_file() for child in path.iterdir() if child.is_dir()):
        raise ValueError(
            f"--out {path} holds episode data (subsets with {MANIFEST}): give a run directory of its own"
        )


def _cmd_encode(args: argparse.Namespace) -> None:
    from adaworld_gym.latent import encode_frames
    from adaworld_gym.transfer import load_frames

    _check_out_file(args.out, (".npy",))  # never an input's suffix: the input cannot be overwritten
    lam = _load_lam(args.lam)
    mu = encode_frames(lam, load_frames(args.input, size=lam.config.image_size))  # any LAM's frame size
    _save_npy(mu, args.out)
    print(f"{len(mu)} latent actions of dimension {mu.shape[1]} written to {args.out}")


def _cmd_compose(args: argparse.Namespace) -> None:
    import numpy as np

    from adaworld_gym.latent import compose

    _check_out_file(args.out, (".npy",))
    latents = []
    for path in args.latents:
        z = _load_npy(path)
        if z.ndim not in (1, 2):
            raise ValueError(f"{path}: expected latent actions of shape [d] or [N, d], got {z.shape}")
        if z.dtype.kind not in "biuf":
            raise ValueError(f"{path}: expected numbers, got an array of {z.dtype}")
        if z.size == 0:  # its mean would be NaN, reported as "contain NaN" without the file's name
            raise ValueError(f"{path} holds no latent actions (shape {z.shape})")
        with np.errstate(over="ignore"):
            if not np.isfinite(z.astype(np.float32)).all():
                raise ValueError(f"{path} holds NaN, inf or values beyond float32's range")
        latents.append(z.mean(axis=0) if z.ndim == 2 else z)  # a file of many latents counts as its mean
    dims = {z.shape for z in latents}
    if len(dims) != 1:
        raise ValueError(f"latent actions have different shapes: {sorted(dims)}")
    _save_npy(compose(*latents, weights=args.weights), args.out)
    print(f"composed {len(latents)} latent actions into {args.out}")


def _cmd_cluster(args: argparse.Namespace) -> None:
    from adaworld_gym import defaults
    from adaworld_gym.latent import kmeans, sample_latents, save_options
    from adaworld_gym.training.world_model import model_dir_of

    # Beside the weights that were loaded: a training run's directory (which --lam accepts) holds them in model/.
    target = model_dir_of(args.lam, "LAM", "train_lam")
    if Path(target).resolve().is_relative_to(Path(defaults.ASSETS).resolve()):
        raise ValueError(
            f"the options would be written into the installed package ({target}): copy the LAM to a directory "
            f"of your own first (cp -r {target} my_lam) and pass --lam my_lam"
        )
    mu, _, _, names = sample_latents(_load_lam(args.lam), args.data, args.samples, seed=args.seed)
    centres = kmeans(mu, args.k, seed=args.seed)
    path = save_options(target, centres, source=",".join(names))
    print(f"{args.k} control options from {len(mu)} latent actions stored in {path}")


def _cmd_plot(args: argparse.Namespace) -> None:
    from adaworld_gym.latent import PLOT_SUFFIXES, plot_latents, sample_latents

    _check_out_file(args.out, PLOT_SUFFIXES)
    mu, actions, groups, names = sample_latents(_load_lam(args.lam), args.data, args.samples, seed=args.seed)
    plot_latents(mu, actions if (actions >= 0).any() else None, groups, args.out, group_names=names)
    print(f"plot of {len(mu)} latent actions written to {args.out}")


def _cmd_train_wm(args: argparse.Namespace) -> None:
    from adaworld_gym.training.world_model import train_world_model

    if args.lam is None and not args.action_agnostic:
        raise ValueError("--lam is required unless --action-agnostic")
    if args.lam is not None and args.action_agnostic:
        raise ValueError("--action-agnostic trains without latent actions: drop --lam")
    _check_run_dir(args.out)
    path = train_world_model(
        _data_spec(args),
        args.out,
        args.lam,
        preset=args.preset,
        action_agnostic=args.action_agnostic,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        init_from=args.init_from,
    )
    _report(f"world model saved to {path}")


def _cmd_transfer(args: argparse.Namespace) -> None:
    from adaworld_gym.defaults import DEFAULT_LAM, DEFAULT_WORLD_MODEL, shipped
    from adaworld_gym.transfer import transfer_gif
    from adaworld_gym.viz import GIF_SUFFIXES

    _check_out_file(args.out, GIF_SUFFIXES)
    lam = args.lam or shipped(DEFAULT_LAM, "latent action model")
    model = args.model or shipped(DEFAULT_WORLD_MODEL, "world model")
    out = transfer_gif(
        args.source, args.target, args.out, lam, model, steps=args.steps, denoise_steps=args.denoise_steps,
        seed=args.seed, target_frames=args.target_frames, progress=True,
    )  # fmt: skip
    print(f"wrote {out} (source | transferred)")


def _cmd_demo(args: argparse.Namespace) -> None:
    from adaworld_gym.demo import run_demo

    _check_out_dir(args.out)
    run_demo(args.out, seed=args.seed)


def _cmd_train_reward(args: argparse.Namespace) -> None:
    from adaworld_gym.training.reward import attach_refusal, attach_reward_head, held_out_r2, train_reward

    _check_run_dir(args.out)
    if args.bundle is not None:  # before training: a wrong path or a bundle the head cannot fit fails now
        from adaworld_gym.data.clips import env_ids
        from adaworld_gym.envs.shipped import check_recorded_env
        from adaworld_gym.models.bundle import AdaWorldBundle

        bundle = AdaWorldBundle.from_pretrained(args.bundle)
        # As adapt: one env, and not another adaptable one than the bundle's (own recordings are the user's).
        check_recorded_env(
            env_ids(args.data), bundle.meta.get("env_id"), "--data", "train a head on one env's rewards"
        )
        lam_dim = None if args.lam is None else _load_lam(args.lam).config.latent_dim
        if lam_dim is not None and lam_dim != bundle.adapter.latent_dim:
            raise ValueError(
                f"--lam {args.lam} has latent_dim {lam_dim}, the bundle's adapter {bundle.adapter.latent_dim}: "
                "a head trained with it could not be attached (use the bundle's LAM)"
            )
    path = train_reward(
        args.data,
        args.out,
        lam_dir=args.lam,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        seed=args.seed,
        max_episodes=args.max_episodes,
        imagined_by=args.imagined_by,
        imagined_denoise_steps=args.imagined_denoise_steps,
    )
    import json

    summary = json.loads((args.out / "summary.json").read_text())
    metrics = summary["eval"]
    print(
        f"reward head saved to {path}; on {summary['eval_on'].replace('_', '-')} episodes it explains "
        f"{held_out_r2(metrics):.2f} of the reward variance (R^2; {metrics['reward_events']} rewarded of "
        f"{metrics['pairs']} transitions; more in {args.out / 'summary.json'})"
    )
    if args.bundle is not None:
        # A head that learned nothing would make the bundle pay noise (or a constant) every step.
        why = attach_refusal(summary)
        if why is not None and not args.attach_anyway:
            raise ValueError(
                f"not attached to {args.bundle}: {why}. Collect more episodes in which the game pays or ends "
                "(more or longer ones), or pass --attach-anyway"
            )
        attach_reward_head(args.bundle, path)
        print(f"reward head attached to the bundle {args.bundle}" + (f" (despite: {why})" if why else ""))


def _cmd_play(args: argparse.Namespace) -> None:
    from adaworld_gym.envs.viewer import no_display
    from adaworld_gym.play import play

    if args.policy is not None and not args.headless:
        raise ValueError(
            "--policy plays without a window: add --headless (interactive play reads the keyboard)"
        )
    if not args.headless and no_display():
        raise ValueError(
            "no display to open a window on (DISPLAY is unset): add --headless to let a policy play"
        )
    result = play(
        args.env,
        args.bundle,
        record=args.record,
        headless=args.headless,
        steps=args.steps,
        seed=args.seed,
        policy=args.policy or "random",
    )
    finished = f", {len(result.episode_returns)} episodes ended" if result.episode_returns else ""
    print(f"played {result.steps} steps, total reward {result.rewards.sum():.3f}{finished}")
    if result.record is not None:
        print(f"recording written to {result.record}")


def _cmd_plan(args: argparse.Namespace) -> None:
    from adaworld_gym.plan import plan_push

    result = plan_push(
        args.out,
        model=args.model,
        task=args.task,
        task_start=args.task_start,
        env_id=args.env,
        planner=args.planner,
        samples=args.samples,
        horizon=args.horizon,
        seed=args.seed,
        workers=args.workers,
        steps=args.steps,
        denoise_steps=args.denoise_steps,
    )
    replans = len(result.result.episode.replan_seconds)
    timing = (
        f"{result.seconds_per_replan:.2f} s per replan"
        if replans
        else "no replans (--steps 1: the zero action)"
    )
    print(
        f"task {result.task} with {result.model} ({result.dynamics}): "
        f"{'success' if result.success else 'failure'}, best max object distance {result.best_distance:.3f} m "
        f"(start {result.result.distances[0]:.3f} m, success below 0.05 m), {timing}"
    )
    print(f"wrote {result.out} (goal | real{' | imagined' if result.result.imagined is not None else ''})")


def _cmd_adapt(args: argparse.Namespace) -> None:
    from adaworld_gym.training.adapt import adapt, adapt_config, adaptation_space, collect_adaptation_data

    space = adaptation_space(args.env)
    _check_adapt_inputs(args)  # before a collection that can take minutes
    config = adapt_config(  # checked before collecting too
        samples_per_action=args.samples_per_action,
        trajectories=args.trajectories,
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        init=args.init,
        mlp_fit_steps=args.mlp_fit_steps,
        motion=args.motion,
        seed=args.seed,
    )
    data = args.data or collect_adaptation_data(
        args.env,
        args.out / "data",
        samples_per_action=args.samples_per_action,
        trajectories=args.trajectories,
        episode_steps=args.episode_steps,
        seed=args.seed,
    )
    path = adapt(
        args.model,
        args.lam,
        data,
        args.out,
        config,
        expected_action_space=space,
        meta={"env_id": args.env},
    )
    print(f"adapted bundle saved to {path} (action space {space}; summary in {args.out / 'summary.json'})")


def _cmd_bundle(args: argparse.Namespace) -> None:
    from adaworld_gym.latent_bundle import build_latent_bundle

    _check_out_dir(args.out)
    path = build_latent_bundle(
        args.lam,
        args.model,
        args.data,
        args.out,
        args.actions,
        args.bound,
        args.starts,
        args.reward,
        args.seed,
    )
    print(f"bundle saved to {path}: gymnasium.make('AdaWorld/WorldModel-v0', bundle='{path}')")


def _check_adapt_inputs(args: argparse.Namespace) -> None:
    """The model, its LAM, --out and flags that would be ignored, checked before any data is collected."""
    from adaworld_gym.data.episodes import FRAME_SHAPE
    from adaworld_gym.training.common import BUNDLE, check_save_target
    from adaworld_gym.training.world_model import check_lam_compatible, load_lam, load_world_model

    _check_run_dir(args.out)
    check_save_target(args.out / "bundle", BUNDLE)  # where the bundle goes, after the finetune
    model = load_world_model(args.model)
    if model.config.action_agnostic:
        if args.lam is not None:
            raise ValueError(f"{args.model} is action-agnostic: it takes no LAM, drop --lam")
    elif args.lam is None:
        raise ValueError(f"{args.model} is LAM-conditioned: pass the LAM that labelled its data with --lam")
    else:
        check_lam_compatible(load_lam(args.lam), model)
    size = model.config.sample_size
    if not args.data and size != FRAME_SHAPE[0]:
        raise ValueError(
            f"{args.model} makes {size}x{size} frames and {args.env} serves {FRAME_SHAPE[0]}x{FRAME_SHAPE[1]}: "
            "adapting to a real env needs a model trained at its frame size"
        )
    if args.data and args.episode_steps is not None:
        raise ValueError(
            "--episode-steps sets the length of collected episodes; with --data nothing is collected"
        )


def _add_shares_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shares",
        type=float,
        nargs="+",
        default=None,
        help="share of the batches from each --data directory (default: AdaWorld's size^0.43 weighting)",
    )


class _DefaultsHelp(argparse.HelpFormatter):
    """Help lines that end with their default, where there is one worth saying (not None, False or '')."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text
            or default in (None, False, "", argparse.SUPPRESS)
            or not action.option_strings
            or action.required
        ):
            return action.help
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _subcommand(sub: Any, name: str, help: str) -> argparse.ArgumentParser:  # noqa: A002 (argparse's name)
    """A subcommand whose own ``--help`` opens with what it does (the line ``adaworld --help`` lists for it)
    and gives each option's default."""
    parser = sub.add_parser(
        name, help=help, description=help[:1].upper() + help[1:] + ".", formatter_class=_DefaultsHelp
    )
    parser.set_defaults(subparser=parser)  # the innermost one wins: unknown flags are reported with its usage
    return parser


def build_parser() -> argparse.ArgumentParser:
    from adaworld_gym import __version__

    parser = argparse.ArgumentParser(
        prog="adaworld", description="Latent-action diffusion world models as Gymnasium environments."
    )
    parser.add_argument("--version", action="version", version=f"adaworld-gym {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    collect = _subcommand(sub, "collect", help="collect episode data from a simulator or videos")
    csub = collect.add_subparsers(dest="source", required=True)
    pg = _subcommand(csub, "procgen", help="uniform-random-action Procgen episodes")
    pg.add_argument(
        "--games",
        type=_games,
        default=list(PRETRAIN_GAMES),
        help=f"comma list, or one of {', '.join(GAME_SETS)}",
    )
    pg.add_argument("--episodes", type=int, default=100, help="episodes per game")
    pg.add_argument("--steps", type=int, default=200, help="max actions per episode")
    pg.add_argument("--levels", choices=["train", "test"], default="train")
    pg.add_argument("--distribution-mode", default="easy", choices=DISTRIBUTION_MODES)
    pg.add_argument("--batch", type=int, default=16, help="episodes run side by side")
    push = _subcommand(
        csub, "push", help="RobosuitePush episodes: scripted pushes, noisy pushes, random actions"
    )
    push.add_argument("--episodes", type=int, default=100)
    push.add_argument("--steps", type=int, default=30, help="actions per episode")
    push.add_argument(
        "--workers", type=positive_int, default=2, help="simulator processes (1: in this process)"
    )
    videos = _subcommand(csub, "videos", help="action-free videos (mp4/avi/gif...), one subset per folder")
    videos.add_argument("src", type=Path)
    videos.add_argument("--size", type=int, default=64)
    videos.add_argument("--hz", type=float, default=10.0, help="target frame rate after frame skipping")
    for p in (pg, push, videos):
        p.add_argument("--out", type=Path, required=True)
    for p in (pg, push):  # video collection draws nothing at random: a --seed there would be ignored
        p.add_argument("--seed", type=seed_int, default=0)
    collect.set_defaults(func=_cmd_collect)

    lam = _subcommand(sub, "train-lam", help="train the latent action model")
    lam.add_argument("--data", type=Path, nargs="+", required=True)
    _add_shares_argument(lam)
    lam.add_argument("--preset", choices=["tiny", "small", "base"], default="small")
    lam.add_argument("--regularizer", choices=["kl", "vq", "sparse", "none"], default="kl")
    lam.add_argument("--beta", type=float, default=None)
    lam.add_argument("--max-steps", type=int, default=None)
    lam.add_argument("--max-minutes", type=float, default=None)
    lam.add_argument(
        "--lr", type=positive_float, default=None, help="peak learning rate (default: the preset's)"
    )
    lam.add_argument(
        "--batch-size", type=positive_int, default=None, help="windows per step (default: the preset's)"
    )
    lam.add_argument("--seed", type=seed_int, default=0)
    lam.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    lam.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this saved LAM's weights (same preset), e.g. to finetune it on a new data mix",
    )
    lam.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model setting of the preset, e.g. --set pixel_channels=64 (repeatable)",
    )
    lam.add_argument("--out", type=Path, required=True)
    lam.set_defaults(func=_cmd_train_lam)

    wm = _subcommand(sub, "train-wm", help="train the diffusion world model on LAM-labelled transitions")
    wm.add_argument("--lam", type=Path, default=None, help="trained LAM directory (not needed for the twin)")
    wm.add_argument("--data", type=Path, nargs="+", required=True)
    _add_shares_argument(wm)
    wm.add_argument("--preset", choices=["tiny", "small", "base"], default="small")
    wm.add_argument(
        "--action-agnostic", action="store_true", help="the twin: same model, z replaced by zeros"
    )
    wm.add_argument("--max-steps", type=int, default=None)
    wm.add_argument("--max-minutes", type=float, default=None)
    wm.add_argument(
        "--lr", type=positive_float, default=None, help="peak learning rate (default: the preset's)"
    )
    wm.add_argument(
        "--batch-size", type=positive_int, default=None, help="windows per step (default: the preset's)"
    )
    wm.add_argument("--lr-schedule", choices=["cosine", "constant"], default=None)
    wm.add_argument("--warmup-steps", type=_non_negative_int, default=None)
    wm.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this saved world model's weights (same preset), e.g. to train it longer",
    )
    wm.add_argument("--seed", type=seed_int, default=0)
    wm.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    wm.add_argument("--out", type=Path, required=True)
    wm.set_defaults(func=_cmd_train_wm)

    tr = _subcommand(
        sub, "transfer", help="drive a rollout of another scene with a video's latent actions (GIF)"
    )
    tr.add_argument(
        "--source", type=Path, required=True, help="episode (.awe) or video whose actions to copy"
    )
    tr.add_argument("--target", type=Path, required=True, help="image, video or episode to start from")
    tr.add_argument("--steps", type=positive_int, default=20, help="frames to make")
    tr.add_argument("--lam", type=Path, default=None, help="default: the shipped LAM")
    tr.add_argument("--model", type=Path, default=None, help="default: the shipped world model")
    tr.add_argument("--denoise-steps", type=positive_int, default=3, help="Euler steps per frame")
    tr.add_argument("--target-frames", type=positive_int, default=1, help="leading target frames as history")
    tr.add_argument("--seed", type=seed_int, default=0)
    tr.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    tr.add_argument("--out", type=Path, default=Path("transfer.gif"))
    tr.set_defaults(func=_cmd_transfer)

    enc = _subcommand(sub, "encode", help="latent actions of an episode (.awe) or a video")
    enc.add_argument("input", type=Path)
    enc.add_argument("--lam", type=Path, default=None, help="LAM directory (default: the shipped one)")
    enc.add_argument("--out", type=Path, required=True, help=".npy file [T-1, d]")
    enc.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    enc.set_defaults(func=_cmd_encode)

    comp = _subcommand(sub, "compose", help="average latent actions (.npy files of [d] or [N,d])")
    comp.add_argument("latents", type=Path, nargs="+")
    comp.add_argument("--weights", type=float, nargs="+", default=None)
    comp.add_argument("--out", type=Path, required=True, help=".npy file [d]")
    comp.set_defaults(func=_cmd_compose)

    clu = _subcommand(sub, "cluster", help="k-means control options over latent actions, stored with the LAM")
    clu.add_argument("--lam", type=Path, required=True)
    clu.add_argument("--data", type=Path, nargs="+", required=True)
    clu.add_argument("--k", type=positive_int, default=8)
    clu.add_argument("--samples", type=positive_int, default=5000)
    clu.add_argument("--seed", type=seed_int, default=0)
    clu.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    clu.set_defaults(func=_cmd_cluster)

    plot = _subcommand(sub, "plot", help="2-D projection of latent actions by true action and by game (PNG)")
    plot.add_argument("--lam", type=Path, default=None)
    plot.add_argument("--data", type=Path, nargs="+", required=True)
    plot.add_argument("--samples", type=_at_least_two, default=3000)
    plot.add_argument("--seed", type=seed_int, default=0)
    plot.add_argument("--out", type=Path, required=True)
    plot.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    plot.set_defaults(func=_cmd_plot)

    rw = _subcommand(
        sub, "train-reward", help="train the reward / termination head on collected episodes' real rewards"
    )
    rw.add_argument("--data", type=Path, nargs="+", required=True)
    rw.add_argument("--out", type=Path, required=True)
    rw.add_argument("--max-steps", type=int, default=None, help="default 2000")
    rw.add_argument("--max-minutes", type=float, default=None)
    rw.add_argument("--batch-size", type=int, default=None, help="default 64")
    rw.add_argument("--max-episodes", type=positive_int, default=None, help="read at most this many episodes")
    rw.add_argument("--lam", type=Path, default=None, help="also condition on this LAM's latent actions")
    rw.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="attach the trained head to this bundle if on held-out episodes it explains at least 20%% of the "
        "reward variance with at least 5 rewarded transitions (the shipped bundles' rule)",
    )
    rw.add_argument(
        "--attach-anyway", action="store_true", help="attach to --bundle even a head that fails that rule"
    )
    rw.add_argument(
        "--imagined-by",
        type=Path,
        default=None,
        help="train on next frames this bundle's world model makes from the real ones (what imagination shows)",
    )
    rw.add_argument("--imagined-denoise-steps", type=positive_int, default=None, help="default 1")
    rw.add_argument("--seed", type=seed_int, default=0)
    rw.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    rw.set_defaults(func=_cmd_train_reward)

    pl = _subcommand(sub, "play", help="play an environment with the keyboard (pygame), or headless")
    pl.add_argument("--env", required=True, help="e.g. AdaWorld/WorldModel-v0 or AdaWorld/Procgen-heist-v0")
    pl.add_argument("--bundle", type=Path, default=None, help="bundle directory for world-model envs")
    pl.add_argument("--record", type=Path, default=None, help="write the frames to this GIF")
    pl.add_argument("--headless", action="store_true", help="no window: a policy plays (for CI)")
    pl.add_argument(
        "--policy", choices=["random", "keys"], default=None, help="headless policy (default: random)"
    )
    pl.add_argument("--steps", type=int, default=None, help="stop after N steps (headless default 100)")
    pl.add_argument("--seed", type=seed_int, default=0)
    pl.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    pl.set_defaults(func=_cmd_play)

    plan = _subcommand(
        sub, "plan", help="goal-image MPC on a VP2 push task with the simulator oracle or a world model (GIF)"
    )
    plan.add_argument(
        "--env", default="AdaWorld/RobosuitePush-v0", help="only AdaWorld/RobosuitePush-v0 so far"
    )
    plan.add_argument(
        "--model",
        default="oracle",
        help="'oracle' (the simulator), 'default' (the shipped push bundle) or a bundle",
    )
    plan.add_argument(
        "--task", type=push_task_index, default=0, help="task index in make_push_tasks(n, seed)"
    )
    plan.add_argument(
        "--task-start",
        default="approach",
        help="where the task starts in its demo: 'approach' (0.22 m behind the object) or 'contact' (touching it)",
    )
    plan.add_argument("--planner", choices=["mppi", "cem"], default="mppi")
    plan.add_argument(
        "--samples", type=int, default=200, help="candidates per replan (VP2: 200; ~32 is practical on a CPU)"
    )
    plan.add_argument("--horizon", type=int, default=10, help="actions per candidate (VP2: 10)")
    plan.add_argument("--steps", type=int, default=15, help="executed steps (VP2: 15)")
    plan.add_argument(
        "--workers", type=int, default=2, help="simulator processes for the oracle (0: in-process)"
    )
    plan.add_argument("--denoise-steps", type=int, default=1, help="Euler steps per predicted frame (models)")
    plan.add_argument(
        "--seed", type=seed_int, default=0, help="seeds the tasks, the planner and the model's noise"
    )
    plan.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    plan.add_argument(
        "--out",
        type=Path,
        default=Path("plan.gif"),
        help="GIF of the episode, goal | real (default: plan.gif)",
    )
    plan.set_defaults(func=_cmd_plan)

    ad = _subcommand(
        sub,
        "adapt",
        help="finetune a pretrained world model to a real env's actions (codebook / MLP adapter)",
    )
    ad.add_argument("--model", type=Path, required=True, help="pretrained world model directory")
    ad.add_argument(
        "--lam", type=Path, default=None, help="its LAM (not needed for the action-agnostic twin)"
    )
    ad.add_argument("--env", required=True, help="AdaWorld/Procgen-<game>-v0 or AdaWorld/RobosuitePush-v0")
    ad.add_argument(
        "--data", type=Path, nargs="+", default=None, help="collected episodes (default: collect)"
    )
    ad.add_argument(
        "--samples-per-action", type=positive_int, default=100, help="discrete actions: labelled samples each"
    )
    ad.add_argument(
        "--trajectories", type=positive_int, default=100, help="continuous actions: labelled episodes"
    )
    ad.add_argument(
        "--episode-steps", type=positive_int, default=None, help="collection: actions per episode"
    )
    ad.add_argument(
        "--steps", type=_non_negative_int, default=800, help="finetuning steps (0: the adapter's start only)"
    )
    ad.add_argument("--batch-size", type=positive_int, default=32, help="finetuning batch")
    ad.add_argument(
        "--lr", type=positive_float, default=5e-4, help="adapter rate; pretrained weights get a tenth"
    )
    ad.add_argument(
        "--init",
        choices=["auto", "mean_mu", "random"],
        default="auto",
        help="adapter start: auto = mean mu per action (discrete), an MLP fit (continuous), random for the twin",
    )
    ad.add_argument(
        "--mlp-fit-steps", type=_non_negative_int, default=3000, help="continuous: MLP pre-fit steps"
    )
    ad.add_argument(
        "--motion",
        action="store_true",
        help="the adapter also sees the LAM's latent action of the last history transition (motion context)",
    )
    ad.add_argument("--seed", type=seed_int, default=0)
    ad.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ad.add_argument("--out", type=Path, required=True, help="run directory; the bundle goes to OUT/bundle")
    ad.set_defaults(func=_cmd_adapt)

    bu = _subcommand(
        sub, "bundle", help="a bundle from videos alone: k-means options or the latent action as its actions"
    )
    bu.add_argument("--lam", type=Path, required=True, help="the LAM (with `adaworld cluster` options)")
    bu.add_argument("--model", type=Path, required=True, help="the world model trained on its latents")
    bu.add_argument(
        "--data", type=Path, nargs="+", required=True, help="episodes whose first frames start it"
    )
    bu.add_argument(
        "--actions",
        choices=ACTION_KINDS,
        default="options",
        help="options: Discrete(k) over the cluster options; latent: Box over the latent action",
    )
    bu.add_argument(
        "--bound", type=float, default=None, help="latent: the Box bound (default: 99th percentile of |mu|)"
    )
    bu.add_argument(
        "--starts", type=positive_int, default=16, help="start frames (first frame of each episode)"
    )
    bu.add_argument(
        "--reward", type=Path, default=None, help="a reward head (adaworld train-reward) to attach"
    )
    bu.add_argument("--seed", type=seed_int, default=0)
    bu.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    bu.add_argument("--out", type=Path, required=True, help="the bundle directory")
    bu.set_defaults(func=_cmd_bundle)

    demo = _subcommand(sub, "demo", help="the end-to-end job on the shipped defaults")
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument("--seed", type=seed_int, default=0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_gracefully_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so trainers checkpoint before exiting.

    SIGINT needs this too: shells start background jobs (``nohup ... &``) with SIGINT ignored.
    """
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would report them with the top-level usage, not the subcommand's
        getattr(args, "subparser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    _stop_gracefully_on_signals()
    # Every command that runs a model takes --threads, default 1: on a busy 2-core machine two threads stepped
    # the world model ~50x slower, and a transfer took 16.5 s at two threads against 7.2 s at one.
    if hasattr(args, "threads"):
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # user-facing problems: say what is wrong, no traceback
        notes = "".join(f"\n  {note}" for note in getattr(e, "__notes__", ()))
        print(f"adaworld {args.command}: error: {e}{notes}", file=sys.stderr)
        return 2
    except ImportError as e:
        if "pip install" not in str(e):  # not a missing optional extra (pygame): a bug, show the traceback
            raise
        print(f"adaworld {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = args.command in RESUMABLE_COMMANDS
        print(
            f"adaworld {args.command}: interrupted"
            + ("; rerun the same command to resume" if resumable else ""),
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
