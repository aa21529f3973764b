"""evaluate.json after a one-epoch training (in-process), and `medvq.report compare` on the result."""

from __future__ import annotations

import json
from pathlib import Path

from monai.bundle import ConfigWorkflow

from medvq.report import compare_runs

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundles" / "odir_vq" / "configs"
TRAIN, QUICKSTART, EVALUATE = str(CONFIGS / "train.json"), str(ROOT / "configs" / "quickstart.json"), str(
    CONFIGS / "evaluate.json")
PNG = b"\x89PNG\r\n\x1a\n"


def _run(configs, run_id, **overrides):
    workflow = ConfigWorkflow(config_file=configs, workflow_type=None, run_id=run_id,
                              meta_file=str(CONFIGS / "metadata.json"), logging_file=False, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def test_evaluate_writes_metrics_plots_and_compares(tmp_path):
    for schedule in ("standard", "deferred"):
        out = tmp_path / schedule
        overlay = str(ROOT / "configs" / "schedules" / f"{schedule}.json")
        _run([TRAIN, QUICKSTART, overlay], "training", output_dir=str(out), num_epochs=2, synthetic_images=24,
             num_workers=0, checkpoint_every=100)
        _run([TRAIN, QUICKSTART, EVALUATE], "evaluate", output_dir=str(out), num_workers=0)
        report = json.loads((out / "eval" / "metrics.json").read_text())
        assert report["schedule"] == schedule
        validation = json.loads((out / "datalist.json").read_text())["validation"]
        assert report["num_images"] == len(validation) > 0
        assert len(report["checkpoint_sha256"]) == 64
        for key in ("psnr", "ssim", "usage", "perplexity", "code_distance", "dead_codes", "shrinkage"):
            assert isinstance(report["metrics"][key], (int, float)), key
        for name in ("code_frequencies.png", "codebook_pca.png", "code_distances.png"):
            assert (out / "eval" / name).read_bytes()[:8] == PNG
    result = compare_runs([tmp_path / "standard", tmp_path / "deferred"], tmp_path / "comparison")
    assert "| schedule | standard | deferred |" in result["table"]
    assert len(result["plots"]) == 2
