"""Smoke run of ``benchmarks/data_pipeline.py --smoke``: the real pipeline on 6 small generated JPEGs, in-process.
Checks the printed table's shape (every variant, worker count and epoch, the cache sizes, a verdict), never the
timings."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def data_pipeline():
    return load_benchmark("data_pipeline")


def test_smoke_prints_every_variant_and_a_verdict(data_pipeline, tmp_path, capsys):
    lines = data_pipeline.main(["--smoke", "--data_dir", str(tmp_path / "jpegs")])
    assert capsys.readouterr().out.splitlines() == lines
    rows = {tuple(line.split()[:3]) for line in lines if line.split()[:1] in (["raw"], ["memory"], ["persistent"])}
    expected = {("memory", "-", "0")} | {
        (variant, workers, epoch) for variant in ("raw", "memory", "persistent") for workers in ("0", "2")
        for epoch in ("1", "2")
    }
    assert rows == expected
    assert lines[0].startswith("generated 6 distinct JPEGs of 320x240")
    assert any(line.startswith("in-memory cache: ") and "persistent cache: " in line for line in lines)
    assert sum(line.startswith("verdict (target: epoch 2 <= 0.2 x the raw epoch") for line in lines) == 1
    assert len(list((tmp_path / "jpegs").glob("fundus_*.jpg"))) == 6


def test_data_dir_is_reused(data_pipeline, tmp_path):
    folder = tmp_path / "jpegs"
    items, made = data_pipeline.make_jpegs(folder, 3, 64, 48)
    assert made.startswith("generated 3 distinct JPEGs")
    again, made = data_pipeline.make_jpegs(folder, 2, 64, 48)
    assert made.startswith("reused 2 JPEGs") and again == items[:2]
