"""Named conditions, batch seeds, the sample writer (PNG + provenance sidecar) and the metrics of generated tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medvq.generation import SYNTHETIC_NOTICE, batch_seed, condition_vectors, write_samples
from medvq.metrics import ScaleCoverage
from medvq.networks import msvqgan_tiny, var_tiny


def test_condition_vectors():
    vectors = condition_vectors(["G", "D+H", "null"], ["N", "D", "G", "H"])
    assert vectors["G"].tolist() == [0, 0, 1, 0] and vectors["D+H"].tolist() == [0, 1, 0, 1]
    assert vectors["null"] is None and list(vectors) == ["G", "D+H", "null"]
    with pytest.raises(ValueError, match=r"'X' \(in 'D\+X'\) is not a class; classes are \['N', 'D'\]"):
        condition_vectors(["D+X"], ["N", "D"])
    with pytest.raises(ValueError, match="repeated"):
        condition_vectors(["N", "N"], ["N"])
    with pytest.raises(ValueError, match="empty"):
        condition_vectors([], ["N"])


def test_batch_seed_is_stable_and_distinct():
    assert batch_seed(0, "G", 0) == batch_seed(0, "G", 0)
    assert len({batch_seed(0, "G", 0), batch_seed(0, "G", 1), batch_seed(0, "D", 0), batch_seed(1, "G", 0)}) == 4
    assert 0 <= batch_seed(7, "D+H", 3) < 2**63


def test_write_samples_is_reproducible_and_traceable(tmp_path):
    torch.manual_seed(0)
    tokenizer = msvqgan_tiny(scales=(1, 2, 4), num_embeddings=16, embedding_dim=4)
    var = var_tiny(num_embeddings=16, embedding_dim=4, scale_lengths=tokenizer.quantizer.scale_lengths,
                   num_conditions=2)
    ckpt = tmp_path / "generator.pt"
    torch.save(var.state_dict(), ckpt)
    kwargs = {"conditions": ["A", "A+B", "null"], "class_names": ["A", "B"], "num_per_condition": 3, "batch_size": 2,
              "guidance": 1.5, "top_k": 8, "progress": False, "checkpoints": {"generator": str(ckpt), "tokenizer": ""}}
    records = write_samples(var, tokenizer, output_dir=tmp_path / "one", **kwargs)
    again = write_samples(var, tokenizer, output_dir=tmp_path / "two", **kwargs)
    assert [r["tokens"] for r in records] == [r["tokens"] for r in again]  # same seed, same images
    first = records[0]
    assert first["synthetic"] is True and first["notice"] == SYNTHETIC_NOTICE
    assert first["checkpoints"]["generator"]["sha256"] and first["checkpoints"]["tokenizer"]["sha256"] is None
    assert first["guidance"] == 1.5 and first["top_k"] == 8 and first["batch_seed"] == batch_seed(0, "A", 0)
    sidecar = json.loads((tmp_path / "one" / "A+B" / "A+B_0002.json").read_text())
    assert sidecar["index_in_batch"] == 0 and sidecar["batch_size"] == 1  # 3 images in batches of 2 -> 2 + 1
    png = Image.open(tmp_path / "one" / "A+B" / "A+B_0002.png")
    assert png.size == (16, 16) and png.text["synthetic"] == "true" and png.text["medvq_condition"] == "A+B"
    grid = np.asarray(Image.open(tmp_path / "one" / "grid.png"))
    assert grid.shape == (3 * 16, 3 * 16, 3)  # a row per condition, 3 samples each
    with pytest.raises(ValueError, match="num_per_condition and batch_size"):
        write_samples(var, tokenizer, ["A"], ["A", "B"], tmp_path / "bad", num_per_condition=0)


def test_scale_coverage_by_hand():
    metric = ScaleCoverage(num_embeddings=4, scale_lengths=[1, 2], prefix="g_")
    metric.update(torch.tensor([[0, 1, 1], [0, 2, 3]]))
    result = metric.compute()
    assert result["g_usage_s0"] == 0.25 and result["g_perplexity_s0"] == pytest.approx(1.0)
    assert result["g_usage_s1"] == 0.75 and result["g_perplexity_s1"] == pytest.approx(2 ** 1.5)  # 1/2, 1/4, 1/4
    assert result["g_usage"] == 1.0 and result["g_dead_codes"] == 0
    assert metric.last_counts.tolist() == [[2, 0, 0, 0], [0, 2, 1, 1]]
    with pytest.raises(ValueError, match=r"tokens must be \(B, 3\)"):
        metric.update(torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 4\)"):
        metric.update(torch.tensor([[0, 1, 4]]))
    with pytest.raises(RuntimeError, match="at least one batch"):
        ScaleCoverage(4, [1]).compute()
    with pytest.raises(ValueError, match=r"scale_lengths must be positive token counts, got \[\]"):
        ScaleCoverage(4, [])
    with pytest.raises(ValueError, match="num_embeddings must be an integer >= 1, got 0"):
        ScaleCoverage(0, [1])


def test_sample_grid_handler_arguments():
    from medvq.handlers import SampleGridHandler

    with pytest.raises(ValueError, match="samples_per_condition and interval must be >= 1, got 0 and 1"):
        SampleGridHandler(None, None, ["A"], ["A"], samples_per_condition=0)
    with pytest.raises(ValueError, match="'Z' .* is not a class"):
        SampleGridHandler(None, None, ["Z"], ["A"])


def test_sample_var_rejects_a_generator_on_another_device():
    from medvq.networks import sample_var

    tokenizer = msvqgan_tiny(scales=(1, 2), num_embeddings=16, embedding_dim=4)
    var = var_tiny(num_embeddings=16, embedding_dim=4, scale_lengths=tokenizer.quantizer.scale_lengths)
    with pytest.raises(ValueError, match="generator must be a torch.Generator on var's device"):
        sample_var(var, tokenizer.quantizer, None, num_samples=1, generator="seed")


def test_scale_coverage_reports_effective_dimension_per_scale():
    from medvq.metrics import effective_dimension

    g = torch.Generator().manual_seed(0)
    tokens = torch.tensor([[0, 1, 2, 1, 3], [1, 2, 3, 0, 0]])  # (B=2, L=1+4)
    # scale 0's residuals lie on a line, scale 1's spread in 3 dimensions
    line = torch.randn(2, 1, generator=g) * torch.tensor([[1.0, 2.0, 0.0]])
    cloud = torch.randn(2, 4, 3, generator=g)
    residuals = torch.cat([line[:, None], cloud], dim=1).reshape(-1, 3)  # (B * L, D), image by image
    codebook = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    metric = ScaleCoverage(num_embeddings=4, scale_lengths=[1, 4], output_transform=lambda x: x, codebook=codebook)
    metric.update((tokens, residuals))
    out = metric.compute()
    assert out["residual_effective_dim_s0"] == pytest.approx(1.0, abs=1e-9)  # two points: one direction
    assert out["residual_effective_dim_s1"] == pytest.approx(effective_dimension(cloud.reshape(-1, 3)), rel=1e-9)
    # codes used at scale 0 are 0 and 1; at scale 1 all four
    assert out["codebook_effective_dim_s0"] == pytest.approx(effective_dimension(codebook[[0, 1]]), rel=1e-9)
    assert out["codebook_effective_dim_s1"] == pytest.approx(effective_dimension(codebook), rel=1e-9)
    with pytest.raises(ValueError, match=r"residuals must be \(B \* L, D\)"):
        metric.update((tokens, residuals[:3]))
    tokens_only = ScaleCoverage(num_embeddings=4, scale_lengths=[1, 4], output_transform=lambda x: x)
    tokens_only.update(tokens)
    assert not any("effective_dim" in key for key in tokens_only.compute())  # no residuals, no such keys
