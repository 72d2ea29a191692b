"""benchmarks/env_speed.py on a tiny random bundle: the results file has the documented shape."""

import json

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
