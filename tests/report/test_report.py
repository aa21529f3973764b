"""Codebook plots and `python -m medvq.report compare` on two small runs."""

from __future__ import annotations

import json

import pytest
import torch

from medvq.report import compare_runs, plot_code_distances, plot_code_frequencies, plot_codebook_pca
from medvq.report.__main__ import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_are_png_files(tmp_path):
    counts = torch.tensor([5, 0, 3, 1])
    codebook, latents = torch.randn(4, 3), torch.randn(200, 3)
    paths = [
        plot_code_frequencies({"a": counts, "b": counts.flip(0)}, tmp_path / "freq.png"),
        plot_codebook_pca(codebook, latents, tmp_path / "pca.png", used=counts > 0),
        plot_code_distances(codebook, tmp_path / "dist.png"),
        plot_codebook_pca(torch.randn(4, 1), torch.randn(50, 1), tmp_path / "pca1d.png"),
    ]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    with pytest.raises(ValueError, match="all zero"):
        plot_code_frequencies(torch.zeros(4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="must share D"):
        plot_codebook_pca(torch.randn(4, 3), torch.randn(10, 2), tmp_path / "x.png")


def _run(root, name, usage, fid):
    (root / name / "eval").mkdir(parents=True)
    metrics = {"schedule": name, "num_images": 12, "checkpoint_sha256": "ab" * 32, "feature_extractor": None,
               "metrics": {"usage": usage, "perplexity": 100 * usage, "r_fid": fid, "lpips": None}}
    (root / name / "eval" / "metrics.json").write_text(json.dumps(metrics))
    torch.save(torch.randint(0, 5, (16,)), root / name / "eval" / "code_counts.pt")
    torch.save(torch.randn(16, 4), root / name / "eval" / "codebook.pt")
    return root / name


def test_compare_two_runs(tmp_path, capsys):
    runs = [_run(tmp_path, "standard", 0.2, 12.5), _run(tmp_path, "deferred", 0.9, 8.25)]
    result = compare_runs(runs, tmp_path / "cmp")
    assert "| usage | 0.2 | 0.9 |" in result["table"]
    assert "| lpips | n/a | n/a |" in result["table"]  # never shown as 0
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("| | standard | deferred |")
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"][1]["metrics"]["r_fid"] == 8.25
    assert all(open(p, "rb").read(8) == PNG for p in result["plots"]) and len(result["plots"]) == 2
    assert main(["compare", *map(str, runs), "--output", str(tmp_path / "cli")]) == 0
    assert "| r_fid | 12.5 | 8.25 |" in capsys.readouterr().out


def test_compare_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"eval/metrics\.json not found: evaluate the run first"):
        compare_runs([tmp_path / "nothing"], tmp_path / "out")
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "nothing")])
