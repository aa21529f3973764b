"""g-FID reference statistics of a datalist split: equal to the statistics of its images, cached by what determines
them, recomputed when any of that changes, and a clear error for a bad knob value."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvq.metrics import ExtractorInfo, FeatureStatistics, gfid_reference_statistics, reference_statistics


class _PoolExtractor:
    """Features = per-channel means and standard deviations over 2x2 quadrants (deterministic, 24 features)."""

    num_features = 24

    def __init__(self, sha256: str = "a" * 64) -> None:
        self.info = ExtractorInfo("pool.pt", sha256, "generic", None)
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        b, c, h, w = images.shape
        quads = images.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, 4, -1)
        return torch.cat([quads.mean(-1), quads.std(-1)], dim=1).reshape(b, -1).double().float()


def _transform():
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged

    return Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image", channel_dim=-1),
                    ScaleIntensityRanged("image", 0, 255, -1, 1)])


def _datalist(tmp_path, n_train=7, n_val=3, seed=0):
    rng = np.random.default_rng(seed)
    lists = {}
    for split, n in (("training", n_train), ("validation", n_val)):
        lists[split] = []
        for i in range(n):
            path = tmp_path / f"{split}_{i}.png"
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
            lists[split].append({"image": path.name})
    (tmp_path / "datalist.json").write_text(json.dumps(lists))
    return tmp_path / "datalist.json", lists


def test_reference_statistics_are_the_training_images_statistics_and_are_cached(tmp_path, caplog):
    datalist, lists = _datalist(tmp_path)
    extractor = _PoolExtractor()
    cache = tmp_path / "cache"
    stats = reference_statistics(datalist, extractor, _transform(), cache_dir=cache, batch_size=3, progress=False)
    # by hand: every training image (and no validation image) through the same transform and extractor
    transform = _transform()
    images = torch.stack([transform({"image": str(tmp_path / item["image"])})["image"].as_tensor()
                          for item in lists["training"]])
    expected = FeatureStatistics.from_features(extractor(images))
    assert stats.count == 7
    torch.testing.assert_close(stats.mean(), expected.mean())
    torch.testing.assert_close(stats.cov(), expected.cov())
    files = list(cache.glob("fid_reference_training_*.pt"))
    assert len(files) == 1 and not list(cache.glob("*.partial"))
    # the second call reads the cache: no extractor call
    calls = extractor.calls
    with caplog.at_level(logging.INFO, logger="medvq.metrics.fid_reference"):
        again = reference_statistics(datalist, extractor, _transform(), cache_dir=cache, progress=False)
    assert extractor.calls == calls and "read from" in caplog.text
    torch.testing.assert_close(again.cov(), stats.cov())


def test_reference_statistics_recompute_when_the_datalist_extractor_or_preprocessing_changes(tmp_path):
    datalist, lists = _datalist(tmp_path)
    cache = tmp_path / "cache"
    first = _PoolExtractor()
    reference_statistics(datalist, first, _transform(), cache_dir=cache, preprocessing={"roi_size": 16},
                         progress=False)
    for extractor, preprocessing in ((_PoolExtractor("b" * 64), {"roi_size": 16}),
                                     (_PoolExtractor(), {"roi_size": 32})):
        reference_statistics(datalist, extractor, _transform(), cache_dir=cache, preprocessing=preprocessing,
                             progress=False)
        assert extractor.calls > 0  # a different key: computed, not read
    lists["training"] = lists["training"][:4]
    datalist.write_text(json.dumps(lists))
    extractor = _PoolExtractor()
    stats = reference_statistics(datalist, extractor, _transform(), cache_dir=cache, preprocessing={"roi_size": 16},
                                 progress=False)
    assert extractor.calls > 0 and stats.count == 4
    assert len(list(cache.glob("*.pt"))) == 4  # one file per key, none overwritten by another key


def test_gfid_reference_knob(tmp_path):
    datalist, _ = _datalist(tmp_path)
    extractor = _PoolExtractor()
    assert gfid_reference_statistics("evaluation", extractor, datalist, _transform()) is None
    assert gfid_reference_statistics("training", None, datalist, _transform()) is None  # no extractor: no g-FID
    assert gfid_reference_statistics("training", extractor, datalist, _transform()).count == 7
    with pytest.raises(ValueError, match=r"--fid_reference must be one of .*'train'"):
        gfid_reference_statistics("train", extractor, datalist, _transform())
    with pytest.raises(FileNotFoundError, match="missing.json"):
        reference_statistics(tmp_path / "missing.json", extractor, _transform())


# ---------------------------------------------------------------------------------------------- DDP
_DDP_WORKER = """
import sys
import torch
import torch.distributed as dist

sys.path.insert(0, sys.argv[2])  # tests/metrics: the extractor and transform of test_fid_reference.py
from test_fid_reference import _PoolExtractor, _transform  # noqa: E402

from medvq.metrics import reference_statistics  # noqa: E402

dist.init_process_group("gloo")
rank = dist.get_rank()
out = {}
for name in ("seven", "three"):
    stats = reference_statistics(f"{sys.argv[1]}/{name}/datalist.json", _PoolExtractor(), _transform(),
                                 cache_dir=f"{sys.argv[1]}/{name}/cache", batch_size=1, progress=False)
    out[name] = {"count": stats.count, "sum": stats.sum, "outer": stats.outer}
torch.save(out, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
"""


def test_reference_statistics_are_reduced_over_four_gloo_ranks(tmp_path):
    """4 ranks (real torchrun, gloo): every rank returns the whole split's statistics, equal to one process's, also
    when a rank gets no image (3 images on 4 ranks); rank 0 writes the one cache file."""
    for name, n in (("seven", 7), ("three", 3)):
        (tmp_path / name).mkdir()
        _datalist(tmp_path / name, n_train=n, n_val=2, seed=n)
    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", str(worker),
           str(tmp_path), str(Path(__file__).parent)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(4)]
    for name, n in (("seven", 7), ("three", 3)):
        single = reference_statistics(tmp_path / name / "datalist.json", _PoolExtractor(), _transform(),
                                      progress=False)
        assert single.count == n
        for r in ranks:
            assert r[name]["count"] == n
            torch.testing.assert_close(r[name]["sum"], single.sum, rtol=1e-12, atol=1e-12)  # float64 sums
            torch.testing.assert_close(r[name]["outer"], single.outer, rtol=1e-12, atol=1e-12)
        assert len(list((tmp_path / name / "cache").glob("fid_reference_training_*.pt"))) == 1
