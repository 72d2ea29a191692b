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
        report = collect.collect_push(args.episodes, args.out, steps=args.steps, seed=args.seed, workers=args.workers)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaworld", description="Latent-action diffusion world models as Gymnasium environments."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    collect = sub.add_parser("collect", help="collect episode data from a simulator or videos")
    csub = collect.add_subparsers(dest="source", required=True)
    pg = csub.add_parser("procgen", help="uniform-random-action Procgen episodes")
    pg.add_argument("--games", type=_games, default=list(PRETRAIN_GAMES), help="comma list, 'pretrain' or 'all'")
    pg.add_argument("--episodes", type=int, default=100, help="episodes per game")
    pg.add_argument("--steps", type=int, default=200, help="max actions per episode")
    pg.add_argument("--levels", choices=["train", "test"], default="train")
    pg.add_argument("--distribution-mode", default="easy")
    pg.add_argument("--batch", type=int, default=16, help="episodes run side by side")
    push = csub.add_parser("push", help="RobosuitePush episodes: scripted pushes, noisy pushes, random actions")
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
