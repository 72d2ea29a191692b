"""The end-to-end demo behind the README's first command (``adaworld demo``).

It runs what the package can do on the shipped defaults, on fresh data from the real simulators:
1. plays the real simulators (a held-out Procgen level, a scripted RobosuitePush episode) into a GIF;
2. labels every transition (but those into a Procgen restart) with the shipped latent action model and shows
   what the latent actions explain: the LAM's reconstruction next to the real frames, PSNR against copying the
   last frame, and a PCA plot of the latent actions coloured by true action and game;
3. with a shipped world model, drives it with latent actions from the real episode (action transfer);
4. steps the shipped ``AdaWorld/WorldModel-Procgen-coinrun-v0`` Gymnasium env and the real game side by side
   from the same held-out start frame with the same random actions, and times its batched vector env.
Without shipped LAM weights it trains a tiny LAM for a minute first and says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from adaworld_gym.data.episodes import atomic_write_bytes
from adaworld_gym.defaults import DEFAULT_LAM, DEFAULT_WORLD_MODEL
from adaworld_gym.metrics import psnr_pooled
from adaworld_gym.viz import save_gif, side_by_side

DEMO_GAMES = ("heist", "maze", "jumper", "caveflyer", "bigfish", "starpilot")
ENV_GAME, ENV_STEPS = "coinrun", 30  # the imagined-vs-real episode of step 4


def _procgen_episodes(out: Path, seed: int, steps: int = 60):
    from adaworld_gym.data.collect import collect_procgen
    from adaworld_gym.data.episodes import EpisodeStore

    data = _data_dir(out, seed)
    collect_procgen(DEMO_GAMES, 4, steps, data, levels="test", seed=seed, batch=4)
    return {
        game: [EpisodeStore(data / f"procgen-{game}").read(n) for n in ("ep_000000", "ep_000001")]
        for game in DEMO_GAMES
    }


def _longest(episodes):
    """The longest episode (the first of the longest: seed 0's demo is unchanged)."""
    return max(episodes, key=lambda ep: len(ep.frames))


def _transfer_clips(episodes, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Source frames (at most ``steps + 1``) and the target's start frame for the transfer GIF.

    Random-action episodes can end early (a maze solved, a jumper killed: at seed 11 the first maze episode has
    18 frames), so the source is the longer episode and the rollout is as long as it allows, rather than
    ``transfer`` refusing a source shorter than 20 steps and the demo stopping half way.
    """
    source = _longest(episodes)
    target = next(ep for ep in episodes if ep is not source) if len(episodes) > 1 else source
    return source.frames[: steps + 1], target.frames[:1]


def _data_dir(out: Path, seed: int) -> Path:
    """One data folder per seed, so a rerun with another seed does not meet the first one's episodes."""
    return out / ("data" if seed == 0 else f"data-seed{seed}")


def _push_episode(seed: int, steps: int = 15) -> np.ndarray:
    from adaworld_gym.sims.push import RobosuitePushEnv, ScriptedPusher

    env = RobosuitePushEnv()
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    pusher = ScriptedPusher(target_object=seed % 4, np_random=rng)
    frames = [obs]
    for _ in range(steps):
        frames.append(env.step(pusher.act(env))[0])
    env.close()
    return np.stack(frames)


def _latent_model(out: Path, seed: int):
    from adaworld_gym.models.latent_action import LatentActionModel

    if (DEFAULT_LAM / "config.json").exists():
        return LatentActionModel.from_pretrained(DEFAULT_LAM).eval(), "shipped"
    from adaworld_gym.training.lam import train_lam

    print("[demo] no shipped latent action model yet: training a tiny one for 1 minute on the demo data")
    path = train_lam(
        [_data_dir(out, seed)], out / "tiny_lam", preset="tiny", max_minutes=1.0, seed=seed, progress=True
    )
    return LatentActionModel.from_pretrained(path).eval(), "tiny, trained by the demo for 1 minute"


def _imagined_vs_real(out: Path, seed: int) -> dict:
    """The shipped world-model env and the real game, same start frame and actions; a GIF and figures."""
    import gymnasium

    from adaworld_gym.envs.shipped import shipped_env_id

    real = gymnasium.make(f"AdaWorld/Procgen-{ENV_GAME}-v0", distribution_mode="easy", levels="test")
    imagined = gymnasium.make(shipped_env_id(f"Procgen-{ENV_GAME}"), denoise_steps=1)
    frame, _ = real.reset(seed=seed)
    imagined.action_space.seed(seed)
    real_frames, imagined_frames = [frame], [imagined.reset(seed=seed, options={"frames": frame[None]})[0]]
    rewards = {"real": 0.0, "imagined": 0.0}
    for _ in range(ENV_STEPS):
        action = imagined.action_space.sample()
        frame, reward, terminated, truncated, _ = real.step(action)
        rewards["real"] += float(reward)  # coinrun pays on its last step only
        if terminated or truncated:  # Procgen's terminal frame already starts a new try: stop before it
            break
        dream, dream_reward, dream_ended, *_ = imagined.step(action)
        real_frames.append(frame)
        imagined_frames.append(dream)
        rewards["imagined"] += float(dream_reward)
        if dream_ended:  # the reward head's end: stepping on would raise
            break
    real.close()
    real_frames, imagined_frames = np.stack(real_frames), np.stack(imagined_frames)
    save_gif(side_by_side(real_frames, imagined_frames), out / "imagined_vs_real.gif", fps=5)
    steps = len(real_frames) - 1
    horizon = min(steps, 10)

    def first_10(frames: np.ndarray) -> float | None:  # None (JSON null) if the game ended on its first step
        return psnr_pooled(frames, real_frames[1 : horizon + 1]) if horizon else None

    return {
        "env": imagined.spec.id,
        "steps": steps,
        "psnr_vs_real_first_10": first_10(imagined_frames[1 : horizon + 1]),
        "copy_start_psnr_first_10": first_10(np.repeat(real_frames[:1], horizon, axis=0)),
        "return": rewards,
        "vector_env_frames_per_second": _vector_env_fps(imagined.spec.id, seed),
    }


def _vector_env_fps(env_id: str, seed: int, num_envs: int = 16, steps: int = 4) -> float:
    """Frames/s of the batched vector env (one denoiser call for all ``num_envs`` rows)."""
    import gymnasium

    vec = gymnasium.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", denoise_steps=1
    )
    vec.reset(seed=seed)
    vec.action_space.seed(seed)
    vec.step(vec.action_space.sample())  # warm-up: the first call builds the sampling copy of the weights
    start = time.perf_counter()
    for _ in range(steps):
        vec.step(vec.action_space.sample())
    fps = num_envs * steps / (time.perf_counter() - start)
    vec.close()
    return fps


def run_demo(out: str | Path = "out/demo", seed: int = 0) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    summary: dict = {"seed": seed}

    print("[demo] 1/4 real simulators: held-out Procgen levels and a scripted RobosuitePush episode")
    episodes = _procgen_episodes(out, seed)
    push = _push_episode(seed)
    # The longer episode of each game: with some seeds a game's first episode ends after a step or two.
    clips = [_longest(episodes[g]).frames[:16] for g in DEMO_GAMES[:3]] + [push[:16]]
    length = min(len(c) for c in clips)
    save_gif(side_by_side(*[c[:length] for c in clips]), out / "real.gif", fps=4)

    print("[demo] 2/4 latent actions: what the latent action model explains")
    lam, lam_source = _latent_model(out, seed)
    summary["lam"] = lam_source
    # Transitions into a Procgen restart (a try ended: the next frame starts the level again) are left out, as the
    # datasets leave them out as frame targets: no action explains them.
    procgen = [ep for eps in episodes.values() for ep in eps]
    kept = [~ep.terminations for ep in procgen]
    f_t = np.concatenate([ep.frames[:-1][k] for ep, k in zip(procgen, kept, strict=True)] + [push[:-1]])
    f_t1 = np.concatenate([ep.frames[1:][k] for ep, k in zip(procgen, kept, strict=True)] + [push[1:]])
    mu = lam.encode(f_t, f_t1)
    recon = lam.decode(f_t, mu)
    summary["lam_recon_psnr"] = psnr_pooled(recon, f_t1)
    summary["copy_last_psnr"] = psnr_pooled(f_t, f_t1)
    rng = np.random.default_rng(seed)
    summary["lam_shuffled_z_psnr"] = psnr_pooled(lam.decode(f_t, mu[rng.permutation(len(mu))]), f_t1)
    n = len(push) - 1
    save_gif(side_by_side(push[1:], recon[-n:]), out / "push_lam_reconstruction.gif", fps=4)

    from adaworld_gym.latent import plot_latents

    actions = np.concatenate([ep.actions[k] for ep, k in zip(procgen, kept, strict=True)])
    groups = np.concatenate(
        [np.full(int((~ep.terminations).sum()), i) for i, eps in enumerate(episodes.values()) for ep in eps]
    )
    plot_latents(mu[: len(actions)], actions, groups, out / "latent_actions.png", group_names=DEMO_GAMES)

    print("[demo] 3/4 world model: action transfer")
    if (DEFAULT_WORLD_MODEL / "config.json").exists():
        from adaworld_gym.models.world_model import DiffusionWorldModel
        from adaworld_gym.transfer import transfer_gif

        wm = DiffusionWorldModel.from_pretrained(DEFAULT_WORLD_MODEL).eval()
        source, target = _transfer_clips(episodes["maze"])
        transfer_gif(source, target, out / "transfer.gif", lam, wm, steps=len(source) - 1, seed=seed)
        summary["world_model"] = "shipped"
        print(f"[demo] 4/4 the world model as a Gymnasium env: Procgen {ENV_GAME}, imagined vs real")
        summary["gym_env"] = _imagined_vs_real(out, seed)
    else:
        summary["world_model"] = "none shipped yet: transfer and imagined rollouts skipped"
    summary["seconds"] = round(time.time() - start, 1)
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    print(
        f"[demo] latent action model ({lam_source}): next-frame PSNR {summary['lam_recon_psnr']:.2f} dB "
        f"vs copy-last {summary['copy_last_psnr']:.2f} dB, with another transition's z "
        f"{summary['lam_shuffled_z_psnr']:.2f} dB"
    )
    if "gym_env" in summary:
        env = summary["gym_env"]
        compared = (
            "the real game ended on its first step"
            if env["psnr_vs_real_first_10"] is None
            else f"PSNR to the real frames {env['psnr_vs_real_first_10']:.2f} dB over the first 10 (the start "
            f"frame held still: {env['copy_start_psnr_first_10']:.2f} dB)"
        )
        print(
            f"[demo] {env['env']}: {env['steps']} steps beside the real game, {compared}; vector env, 16 rows: "
            f"{env['vector_env_frames_per_second']:.0f} frames/s"
        )
    real_panels = " | ".join([*DEMO_GAMES[:3], "push"])
    gifs = f"real.gif ({real_panels}), push_lam_reconstruction.gif (real | LAM decoder)" + (
        ", transfer.gif (source | transferred), imagined_vs_real.gif (real | imagined)"
        if (out / "transfer.gif").exists()
        else ""
    )
    print(
        f"[demo] wrote {out}/: {gifs}, latent_actions.png, summary.json (and the episodes it played in data/)"
    )
    return summary
