import json

from benchmarks.latent_actions import Args, main


def test_smoke_run_writes_results(tmp_path):
    args = Args(
        preset="smoke",
        seed=0,
        seeds=1,
        out=tmp_path / "out",
        data=tmp_path / "data",
        regularizers="kl,vq",
        jobs=1,
    )
    main(args)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for reg in ("kl", "vq"):
        r = results[reg]
        for key in ("recon_psnr", "copy_psnr", "probe_acc_same", "probe_acc_cross", "shuffled_z_psnr"):
            assert isinstance(r[key], float)
        assert 0.0 <= r["probe_acc_cross"] <= 1.0 and len(r["per_seed"]) == 1
    assert (tmp_path / "out" / "latents_kl.png").exists()
    assert "| kl |" in (tmp_path / "out" / "results.md").read_text()
