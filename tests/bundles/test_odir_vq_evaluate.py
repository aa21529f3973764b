"""evaluate.json after a one-epoch training (in-process), and `medvq.report compare` on the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
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


class _TinyExtractor(torch.nn.Module):
    """A small TorchScript feature extractor (images in [-1, 1] -> (B, 8)), standing in for Inception offline."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_evaluate_writes_metrics_plots_and_compares(tmp_path):
    torch.manual_seed(0)
    extractor = tmp_path / "tiny_extractor.pt"
    torch.jit.script(_TinyExtractor()).save(str(extractor))
    for schedule in ("standard", "deferred"):
        out = tmp_path / schedule
        overlay = str(ROOT / "configs" / "schedules" / f"{schedule}.json")
        _run([TRAIN, QUICKSTART, overlay], "training", output_dir=str(out), num_epochs=2, synthetic_images=24,
             num_workers=0, checkpoint_every=100)
        _run([TRAIN, QUICKSTART, EVALUATE], "evaluate", output_dir=str(out), num_workers=0,
             fid_extractor_path=str(extractor), fid_extractor_kind="generic")
        report = json.loads((out / "eval" / "metrics.json").read_text())
        assert isinstance(report["metrics"]["r_fid"], float) and report["metrics"]["r_fid"] >= 0
        assert report["feature_extractor"]["file_name"] == "tiny_extractor.pt"
        assert len(report["feature_extractor"]["sha256"]) == 64
        assert report["metrics"]["ms_ssim"] is None and "not applicable" in report["metrics"]["ms_ssim_note"]
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


def test_evaluate_without_extractor_says_so_and_a_missing_one_is_an_error(tmp_path):
    out = tmp_path / "run"
    _run([TRAIN, QUICKSTART], "training", output_dir=str(out), num_epochs=1, synthetic_images=16, num_workers=0,
         checkpoint_every=100, quantize_start=None)  # the quickstart's switch (epoch 8) is not within 1 epoch
    _run([TRAIN, QUICKSTART, EVALUATE], "evaluate", output_dir=str(out), num_workers=0)
    report = json.loads((out / "eval" / "metrics.json").read_text())
    assert "r_fid" not in report["metrics"] and "fid_extractor_path" in report["r_fid_note"]
    assert report["feature_extractor"] is None
    with pytest.raises(Exception) as info:
        _run([TRAIN, QUICKSTART, EVALUATE], "evaluate", output_dir=str(out), num_workers=0,
             fid_extractor_path=str(tmp_path / "inception-2015-12-05.pt"))
    error = info.value
    while error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, FileNotFoundError) and "fid_extractor_path" in str(error)
