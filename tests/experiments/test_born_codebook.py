"""``medvq.experiments.born_codebook`` on the session's real tiny runs (conftest's ``var_run`` and ``vq_run``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medvq.experiments.born_codebook import born_codebooks, format_rows, main
from medvq.experiments.tokenizer_study import read_run


def test_multiscale_rows_measure_as_the_evaluator_does(var_run):
    rows = born_codebooks(var_run, num_samples=(512, 0), iterations=5, refine=(0, 1))
    trained, born = rows[0], rows[1:]
    # the trained row counts the validation tokens exactly as the bundle's evaluator did at the last epoch
    logged = read_run(var_run / "tokenizer")
    assert trained.variant == "trained"
    assert trained.perplexity == pytest.approx(logged["perplexity"], rel=1e-4)
    assert trained.usage == pytest.approx(logged["usage"], abs=1e-6)
    assert trained.code_distance == pytest.approx(logged["code_distance"], rel=1e-4)
    # one row per (subset size, refinement) with the sizes asked; 0 means every training residual
    assert [(r.num_samples == 512, r.refine) for r in born] == [(True, 0), (True, 1), (False, 0), (False, 1)]
    every = born[2].num_samples
    assert every > 512 and every % 85 == 0  # 85 residuals per image at scales 1, 2, 4, 8
    for row in born:
        assert 1.0 <= row.perplexity <= 32 and 0 < row.usage <= 1 and math.isfinite(row.inertia)
        assert row.latent_mse > 0 and row.code_distance > 0
    # refinement changes the codebook (it fits the cascade's residuals, not the exact pyramid's)
    assert born[1].latent_mse != born[0].latent_mse
    # the run's own network is left as it was: measuring again gives the trained row again
    again = born_codebooks(var_run, num_samples=(512,), iterations=1)[0]
    assert again.perplexity == trained.perplexity and again.code_distance == trained.code_distance


def test_single_scale_run_and_the_cli(vq_run, tmp_path, capsys):
    out = tmp_path / "born.json"
    threads = torch.get_num_threads()
    assert main([str(vq_run), "--num_samples", "1024", "--iterations", "3", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # --threads 1 is the run's, not the calling process's
    table = capsys.readouterr().out
    assert table.startswith("| run | codebook |") and "trained (the run's)" in table and "| 1024 | 0 |" in table
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["trained", "kmeans"]
    assert rows[0]["perplexity"] == pytest.approx(read_run(vq_run)["perplexity"], rel=1e-4)
    assert format_rows([]).count("\n") == 1  # header and rule only


def test_bad_arguments_name_what_to_change(vq_run, tmp_path, capsys):
    with pytest.raises(ValueError, match="--refine needs a multi-scale tokenizer"):
        born_codebooks(vq_run, refine=(1,))
    with pytest.raises(ValueError, match="below the codebook's 256 codes"):
        born_codebooks(vq_run, num_samples=(100,))
    missing = tmp_path / "nope.json"
    assert main([str(vq_run), "--datalist", str(missing)]) == 2
    assert f"datalist '{missing}' does not exist" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        born_codebooks(tmp_path / "no_run")
