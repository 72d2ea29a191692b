"""The ``adaworld`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaworld_gym.sims.games import PRETRAIN_GAMES, PROCGEN_GAMES


def _games(text: str) -> list[str]:
    if text == "pretrain":
        return list(PRETRAIN_GAMES)
    if text == "all":
        return list(PROCGEN_GAMES)
    games = [g.strip().lower() for g in text.split(",") if g.strip()]
    unknown = [g for g in games if g not in PROCGEN_GAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown Procgen game(s) {', '.join(unknown)}; known: {', '.join(PROCGEN_GAMES)}, or 'pretrain'/'all'"
        )
    return games


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


def _cmd_train_lam(args: argparse.Namespace) -> None:
    from adaworld_gym.training.lam import train_lam

    path = train_lam(
        args.data,
        args.out,
        preset=args.preset,
        regularizer=args.regularizer,
        beta=args.beta,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        seed=args.seed,
    )
    print(f"latent action model saved to {path}")


def _load_lam(path: Path | None):
    from adaworld_gym.defaults import DEFAULT_LAM, shipped
    from adaworld_gym.models.latent_action import LatentActionModel

    if path is None:
        path = shipped(DEFAULT_LAM, "latent action model")
    if not Path(path).is_dir():
        raise ValueError(f"latent action model directory not found: {path}")
    return LatentActionModel.from_pretrained(path).eval()


def _read_frames(path: Path):
    """Frames of an episode shard (.awe) or a video file, as uint8 [T,64,64,3]."""
    import numpy as np

    from adaworld_gym.data.collect import VIDEO_SUFFIXES, read_video, square_resize
    from adaworld_gym.data.episodes import read_episode

    if path.suffix == ".awe":
        return read_episode(path).frames
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames, _ = read_video(path)
        return np.stack([square_resize(f, 64) for f in frames])
    raise ValueError(
        f"cannot read frames from {path}: expected an .awe episode or a video ({', '.join(VIDEO_SUFFIXES)})"
    )


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
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read latent actions from {path}: {e}") from e


def _cmd_encode(args: argparse.Namespace) -> None:
    from adaworld_gym.latent import encode_frames

    mu = encode_frames(_load_lam(args.lam), _read_frames(args.input))
    _save_npy(mu, args.out)
    print(f"{len(mu)} latent actions of dimension {mu.shape[1]} written to {args.out}")


def _cmd_compose(args: argparse.Namespace) -> None:
    from adaworld_gym.latent import compose

    latents = []
    for path in args.latents:
        z = _load_npy(path)
        latents.append(z.mean(axis=0) if z.ndim == 2 else z)  # a file of many latents counts as its mean
    dims = {z.shape for z in latents}
    if len(dims) != 1:
        raise ValueError(f"latent actions have different shapes: {sorted(dims)}")
    _save_npy(compose(*latents, weights=args.weights), args.out)
    print(f"composed {len(latents)} latent actions into {args.out}")


def _cmd_cluster(args: argparse.Namespace) -> None:
    from adaworld_gym.latent import kmeans, sample_latents, save_options

    mu, _, _, names = sample_latents(_load_lam(args.lam), args.data, args.samples, seed=args.seed)
    centres = kmeans(mu, args.k, seed=args.seed)
    path = save_options(args.lam, centres, source=",".join(names))
    print(f"{args.k} control options from {len(mu)} latent actions stored in {path}")


def _cmd_plot(args: argparse.Namespace) -> None:
    from adaworld_gym.latent import plot_latents, sample_latents

    mu, actions, groups, names = sample_latents(_load_lam(args.lam), args.data, args.samples, seed=args.seed)
    plot_latents(mu, actions if (actions >= 0).any() else None, groups, args.out, group_names=names)
    print(f"plot of {len(mu)} latent actions written to {args.out}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from adaworld_gym.demo import run_demo

    run_demo(args.out, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaworld", description="Latent-action diffusion world models as Gymnasium environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    collect = sub.add_parser("collect", help="collect episode data from a simulator or videos")
    csub = collect.add_subparsers(dest="source", required=True)
    pg = csub.add_parser("procgen", help="uniform-random-action Procgen episodes")
    pg.add_argument(
        "--games", type=_games, default=list(PRETRAIN_GAMES), help="comma list, 'pretrain' or 'all'"
    )
    pg.add_argument("--episodes", type=int, default=100, help="episodes per game")
    pg.add_argument("--steps", type=int, default=200, help="max actions per episode")
    pg.add_argument("--levels", choices=["train", "test"], default="train")
    pg.add_argument("--distribution-mode", default="easy")
    pg.add_argument("--batch", type=int, default=16, help="episodes run side by side")
    push = csub.add_parser(
        "push", help="RobosuitePush episodes: scripted pushes, noisy pushes, random actions"
    )
    push.add_argument("--episodes", type=int, default=100)
    push.add_argument("--steps", type=int, default=30, help="actions per episode")
    push.add_argument("--workers", type=int, default=2, help="simulator processes")
    videos = csub.add_parser("videos", help="action-free videos (mp4/avi/gif...), one subset per folder")
    videos.add_argument("src", type=Path)
    videos.add_argument("--size", type=int, default=64)
    videos.add_argument("--hz", type=float, default=10.0, help="target frame rate after frame skipping")
    for p in (pg, push, videos):
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--seed", type=int, default=0)
    collect.set_defaults(func=_cmd_collect)

    lam = sub.add_parser("train-lam", help="train the latent action model")
    lam.add_argument("--data", type=Path, nargs="+", required=True)
    lam.add_argument("--preset", choices=["tiny", "small", "base"], default="small")
    lam.add_argument("--regularizer", choices=["kl", "vq", "sparse", "none"], default="kl")
    lam.add_argument("--beta", type=float, default=None)
    lam.add_argument("--max-steps", type=int, default=None)
    lam.add_argument("--max-minutes", type=float, default=None)
    lam.add_argument("--seed", type=int, default=0)
    lam.add_argument("--out", type=Path, required=True)
    lam.set_defaults(func=_cmd_train_lam)

    enc = sub.add_parser("encode", help="latent actions of an episode (.awe) or a video")
    enc.add_argument("input", type=Path)
    enc.add_argument("--lam", type=Path, default=None, help="LAM directory (default: the shipped one)")
    enc.add_argument("--out", type=Path, required=True, help=".npy file [T-1, d]")
    enc.set_defaults(func=_cmd_encode)

    comp = sub.add_parser("compose", help="average latent actions (.npy files of [d] or [N,d])")
    comp.add_argument("latents", type=Path, nargs="+")
    comp.add_argument("--weights", type=float, nargs="+", default=None)
    comp.add_argument("--out", type=Path, required=True)
    comp.set_defaults(func=_cmd_compose)

    clu = sub.add_parser("cluster", help="k-means control options over latent actions, stored with the LAM")
    clu.add_argument("--lam", type=Path, required=True)
    clu.add_argument("--data", type=Path, nargs="+", required=True)
    clu.add_argument("--k", type=int, default=8)
    clu.add_argument("--samples", type=int, default=5000)
    clu.add_argument("--seed", type=int, default=0)
    clu.set_defaults(func=_cmd_cluster)

    plot = sub.add_parser("plot", help="2-D projection of latent actions by true action and by game (PNG)")
    plot.add_argument("--lam", type=Path, default=None)
    plot.add_argument("--data", type=Path, nargs="+", required=True)
    plot.add_argument("--samples", type=int, default=3000)
    plot.add_argument("--seed", type=int, default=0)
    plot.add_argument("--out", type=Path, required=True)
    plot.set_defaults(func=_cmd_plot)

    demo = sub.add_parser("demo", help="the end-to-end job on the shipped defaults")
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:  # user-facing problems: say what is wrong, no traceback
        print(f"adaworld {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
