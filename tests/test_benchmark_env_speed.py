"""benchmarks/env_speed.py on a tiny random bundle: the results file has the documented shape."""

import json

import pytest

from adaworld_gym.models.bundle import tiny_random_bundle
from benchmarks import env_speed


def test_env_speed_writes_single_and_vector_rates(tmp_path):
    tiny_random_bundle("discrete").save_pretrained(tmp_path / "b")
    argv = ["--bundle", str(tmp_path / "b"), "--num-envs", "3", "--steps", "2", "--denoise-steps", "1", "2"]
    results = env_speed.main([*argv, "--repeats", "2", "--threads", "1", "--out", str(tmp_path / "out")])
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk.keys() == {"1", "2", "meta"} and on_disk["meta"]["num_envs"] == 3
    machine = on_disk["meta"]["machine"]  # a speed figure names the hardware it was measured on
    assert machine["cpu"] and machine["cpu_count"] >= 1 and isinstance(machine["extensions"], list)
    for key in ("1", "2"):
        row = on_disk[key]
        assert row["single_fps"] > 0 and row["vector_fps"] > 0
        assert abs(row["speedup"] - row["vector_fps"] / row["single_fps"]) < 1e-9
        assert row["denoiser_speedup"] > 0
        assert row == results[key]
    assert "| 2 |" in (tmp_path / "out" / "results.md").read_text()


def test_one_off_setup_is_not_timed_for_either_run():
    import time

    # The first call of a process pays one-off setup (the bf16 sampling copy, new kernels); it used to land
    # in the first run's time only, so one repeat (ppo_imagination's) made the single envs look slower.
    calls = {"first": 0}

    def first() -> None:
        calls["first"] += 1
        time.sleep(0.3 if calls["first"] == 1 else 0.02)

    def second() -> None:
        time.sleep(0.02)

    fps_first, fps_second = env_speed._alternate_fps(first, second, frames=10, repeats=1)
    assert fps_first / fps_second > 0.5  # equal work: about 1, not 0.02 / 0.3


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("flag", ["--repeats", "--steps", "--num-envs", "--denoise-steps", "--threads"])
def test_env_speed_refuses_zero_counts(tmp_path, capsys, flag):
    # Before: --repeats 0 wrote NaN rates into results.json (not valid JSON); --steps 0 raised a
    # ZeroDivisionError after the timings.
    from benchmarks import env_speed

    with pytest.raises(SystemExit) as stop:
        env_speed.main([flag, "0", "--out", str(tmp_path / "o")])
    assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
