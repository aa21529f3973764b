"""Fidelity metrics: the Fréchet distance against closed forms and MONAI, streaming statistics, offline extractors
(a tiny TorchScript model built here), FID and ImageFidelity on real Ignite engines (and under DDP), PSNR/SSIM by
hand, MS-SSIM applicability and LPIPS availability."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from monai.metrics import FIDMetric, MultiScaleSSIMMetric, PSNRMetric

from medvq.metrics import (
    FID,
    FID_EXTRACTOR_CONFIG_KEY,
    INCEPTION_URL,
    ExtractorInfo,
    FeatureStatistics,
    ImageFidelity,
    LPIPSStatus,
    default_extractor_dirs,
    feature_statistics,
    fid_from_batches,
    frechet_distance,
    image_fidelity,
    load_feature_extractor,
    lpips_status,
    ms_ssim_min_size,
)
from medvq.metrics import fidelity as fidelity_module

SPATIAL_DIMS = [2, 3]  # 2D and 3D cases from one parameter list


def gaussian_samples(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n rows whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov`` (up to rounding)."""
    z = torch.randn(n, mean.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # whitened: sample cov = I
    return mean + z @ torch.linalg.cholesky(cov).T


def closed_form_diagonal(mu1, var1, mu2, var2) -> float:
    """FID of two Gaussians with diagonal covariances: ||mu1 - mu2||^2 + sum_d (sqrt(v1_d) - sqrt(v2_d))^2."""
    return float((mu1 - mu2).square().sum() + (var1.sqrt() - var2.sqrt()).square().sum())


def reference_fid(mu1, sigma1, mu2, sigma2) -> float:
    """The textbook formula with scipy's sqrtm (as pytorch-fid / MONAI)."""
    covmean = scipy.linalg.sqrtm(sigma1.numpy() @ sigma2.numpy())
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * np.trace(covmean).real)


class TinyExtractor(torch.nn.Module):
    """A small conv net with global average pooling: (N, C, H, W) -> (N, 8)."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))  # (N, 8)


class RangeProbe(torch.nn.Module):
    """Reports what the model received: (min, max, last spatial size) per image, for any number of spatial axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        size = torch.full_like(flat[:, 0], float(x.shape[-1]))
        return torch.stack([flat.amin(1), flat.amax(1), size], dim=1)  # (N, 3)


class FakeInception(torch.nn.Module):
    """The StyleGAN2-ADA call convention: uint8 (N, 3, H, W) and `return_features`; returns channel means x 2048."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if img.dtype != torch.uint8 or img.shape[1] != 3:
            raise RuntimeError("expected uint8 RGB")
        means = img.to(torch.float32).mean(dim=(2, 3))  # (N, 3)
        return means.repeat(1, 683)[:, :2048]  # (N, 2048)


class FeatureMaps(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # (N, C, H, W): not pooled


def save_scripted(module: torch.nn.Module, path) -> str:
    torch.manual_seed(0)
    torch.jit.script(module).save(str(path))
    return str(path)


@pytest.fixture
def tiny_extractor_file(tmp_path):
    torch.manual_seed(0)
    return save_scripted(TinyExtractor(), tmp_path / "tiny.pt")


def image_batches(seed: int, sizes=(3, 5, 4), shape=(1, 12, 12), shift: float = 0.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, *shape, generator=g) * 2 - 1 + shift).clamp(-1, 1) for b in sizes]


# ---------------------------------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_by_hand_in_one_dimension():
    # (0 - 3)^2 + (1 - 2)^2 with standard deviations 1 and 2
    assert frechet_distance(torch.zeros(1), torch.ones(1, 1), torch.full((1,), 3.0), torch.full((1, 1), 4.0)) == 10.0


def test_frechet_distance_equals_closed_form_for_diagonal_covariances():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)
    var1, var2 = (
        torch.rand(16, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(16, generator=g, dtype=torch.float64),
    )
    expected = closed_form_diagonal(mu1, var1, mu2, var2)
    assert frechet_distance(mu1, torch.diag(var1), mu2, torch.diag(var2)) == pytest.approx(expected, abs=1e-9)
    # numpy arrays are accepted too
    assert frechet_distance(mu1.numpy(), torch.diag(var1).numpy(), mu2.numpy(), torch.diag(var2).numpy()) == (
        pytest.approx(expected, abs=1e-9)
    )


def test_fid_of_two_gaussian_feature_sets_equals_the_closed_form():
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64) + 1
    var1, var2 = (
        torch.rand(8, generator=g, dtype=torch.float64) + 0.5,
        torch.rand(8, generator=g, dtype=torch.float64) * 3,
    )
    real = gaussian_samples(mu1, torch.diag(var1), 500, seed=2)
    fake = gaussian_samples(mu2, torch.diag(var2), 400, seed=3)
    # streamed through the function API in uneven batches, with the identity as the "extractor"
    result = fid_from_batches(real.split(77), fake.split(130), extractor=lambda x: x)
    assert result.fid == pytest.approx(closed_form_diagonal(mu1, var1, mu2, var2), abs=1e-3)
    assert (result.num_real, result.num_fake, result.extractor) == (500, 400, None)


def test_fid_of_full_covariances_matches_scipy_sqrtm_reference():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(10, 10, generator=g, dtype=torch.float64), torch.randn(10, 10, generator=g, dtype=torch.float64)
    sigma1, sigma2 = a @ a.T + 0.1 * torch.eye(10), b @ b.T + 0.1 * torch.eye(10)
    mu1, mu2 = torch.zeros(10, dtype=torch.float64), torch.ones(10, dtype=torch.float64)
    expected = reference_fid(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n,f", [(200, 16), (20, 64)])  # more rows than features, and fewer (singular covariance)
def test_fid_of_a_set_with_itself_is_zero(n, f):
    x = torch.randn(n, f, generator=torch.Generator().manual_seed(5)) * 3 + 2
    stats = FeatureStatistics.from_features(x)
    assert frechet_distance(stats.mean(), stats.cov(), stats.mean(), stats.cov()) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_batches([x], [x], extractor=lambda t: t).fid == pytest.approx(0.0, abs=1e-6)


# MONAI 1.6 passes scipy's deprecated `disp` argument to sqrtm: its warning, not ours
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
@pytest.mark.parametrize("n_real,n_fake,f", [(300, 250, 32), (40, 30, 64)])
def test_parity_with_monai_fid_metric(n_real, n_fake, f):
    g = torch.Generator().manual_seed(6)
    real = torch.randn(n_real, f, generator=g) @ torch.randn(f, f, generator=g)
    fake = torch.randn(n_fake, f, generator=g) * 0.7 + 0.3
    expected = float(FIDMetric()(fake, real))  # y_pred = fake, y = real
    ours = fid_from_batches([real], [fake], extractor=lambda t: t).fid
    # the singular case (fewer images than features) is where scipy's sqrtm is least accurate
    assert ours == pytest.approx(expected, rel=1e-9 if n_real > f else 1e-6)


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3)), ValueError, "same F"),
        ((torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2)), ValueError, r"\(F, F\)"),
        ((torch.zeros(0), torch.eye(0), torch.zeros(0), torch.eye(0)), ValueError, "F >= 1"),
        ((torch.tensor([math.nan, 0.0]), torch.eye(2), torch.zeros(2), torch.eye(2)), ValueError, "mu1 has non-finite"),
        (
            (torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2), torch.eye(2)),
            ValueError,
            "sigma1 must be a symmetric",
        ),
        (([0.0, 0.0], torch.eye(2), torch.zeros(2), torch.eye(2)), TypeError, "mu1 must be a tensor or a numpy array"),
    ],
)
def test_frechet_distance_errors(args, error, match):
    with pytest.raises(error, match=match):
        frechet_distance(*args)


# ---------------------------------------------------------------------------------------------- streaming statistics
def test_streaming_statistics_equal_one_shot():
    x = torch.randn(101, 6, generator=torch.Generator().manual_seed(7)) + 5
    stats = FeatureStatistics()
    for block in x.split([1, 40, 60]):
        stats.update(block)
    assert stats.count == 101 and stats.num_features == 6
    torch.testing.assert_close(stats.mean(), x.double().mean(0))
    torch.testing.assert_close(stats.cov(), torch.cov(x.double().T))
    # merging the statistics of disjoint parts gives the same as streaming them
    merged = FeatureStatistics.from_features(x[:30]).merge(FeatureStatistics.from_features(x[30:]))
    assert merged.count == 101
    torch.testing.assert_close(merged.cov(), stats.cov())
    assert FeatureStatistics().merge(stats).count == 101  # an empty side is neutral
    # the streamed FID equals the one-shot FID of the concatenated features
    other = torch.randn(50, 6, generator=torch.Generator().manual_seed(8))
    one_shot = frechet_distance(
        x.double().mean(0), torch.cov(x.double().T), other.double().mean(0), torch.cov(other.double().T)
    )
    streamed = fid_from_batches(x.split(13), other.split(7), extractor=lambda t: t).fid
    assert streamed == pytest.approx(one_shot, rel=1e-10)


def test_feature_statistics_by_hand():
    stats = FeatureStatistics(num_features=2)
    stats.update(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert stats.mean().tolist() == [1.0, 2.0]
    assert stats.cov().tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert stats.sum.dtype == stats.outer.dtype == torch.float64


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda s: s.mean(), ValueError, "empty"),
        (lambda s: s.cov(), ValueError, "at least 2 feature rows"),
        (lambda s: s.update(torch.zeros(3, 4, dtype=torch.int64)), TypeError, "floating tensor"),
        (lambda s: s.update(torch.zeros(3, 4, 1)), ValueError, r"\(N, F\)"),
        (lambda s: s.update(torch.full((2, 4), math.nan)), ValueError, "non-finite"),
        (lambda s: (s.update(torch.zeros(2, 4)), s.update(torch.zeros(2, 5))), ValueError, "F = 5 but earlier"),
        (lambda s: s.merge(torch.zeros(2)), TypeError, "FeatureStatistics"),
        (lambda s: FeatureStatistics(num_features=0), ValueError, "num_features"),
    ],
)
def test_feature_statistics_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(FeatureStatistics())


# ---------------------------------------------------------------------------------------------- extractors
def test_generic_extractor_loads_and_records_its_identity(tiny_extractor_file):
    extractor = load_feature_extractor(tiny_extractor_file, kind="generic")
    with open(tiny_extractor_file, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert extractor.info == ExtractorInfo(file_name="tiny.pt", sha256=sha, kind="generic", input_size=None)
    assert "tiny.pt" in extractor.info.describe() and sha[:12] in extractor.info.describe()
    features = extractor(torch.rand(4, 1, 12, 12) * 2 - 1)
    assert features.shape == (4, 8) and extractor.num_features == 8
    assert load_feature_extractor(tiny_extractor_file, kind="generic", resize_to=16).info.input_size == 16


@pytest.mark.parametrize("spatial_dims", SPATIAL_DIMS)
def test_generic_extractor_maps_the_range_and_resizes(tmp_path, spatial_dims):
    path = save_scripted(RangeProbe(), tmp_path / "probe.pt")
    extractor = load_feature_extractor(path, kind="generic", input_range=(0.0, 1.0), resize_to=5)
    images = torch.stack([torch.full((1,) + (3,) * spatial_dims, v) for v in (-1.0, 0.0, 1.0, 1.5)])  # 1.5: clamped
    probe = extractor(images)
    torch.testing.assert_close(probe[:, 0], torch.tensor([0.0, 0.5, 1.0, 1.0]))
    assert probe[:, 2].tolist() == [5.0] * 4


def test_inception_convention_gets_uint8_rgb(tmp_path):
    save_scripted(FakeInception(), tmp_path / "inception-2015-12-05.pt")
    extractor = load_feature_extractor(tmp_path)  # a folder: looks for inception-2015-12-05.pt in it
    assert extractor.info.kind == "inception-stylegan" and extractor.info.input_size == 299
    assert extractor.num_features == 2048
    gray = torch.stack([torch.full((1, 4, 4), v) for v in (-1.0, 0.0, 1.0)])  # repeated to RGB
    features = extractor(gray)
    assert features.shape == (3, 2048)
    assert features[:, 0].tolist() == [0.0, 128.0, 255.0]  # x * 127.5 + 128, truncated, as StyleGAN2-ADA
    with pytest.raises(ValueError, match="generic"):
        extractor(torch.zeros(2, 1, 4, 4, 4))  # a 3D volume


def test_missing_extractor_file_error_names_file_source_and_config_key(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_feature_extractor(tmp_path / "models")
    message = str(info.value)
    assert str(tmp_path / "models") in message
    assert "inception-2015-12-05.pt" in message
    assert "StyleGAN2-ADA" in message and INCEPTION_URL in message and "clean-fid" in message
    assert f"`{FID_EXTRACTOR_CONFIG_KEY}`" in message and FID_EXTRACTOR_CONFIG_KEY == "fid_extractor_path"
    # a generic extractor's error names its file and the config key too
    with pytest.raises(FileNotFoundError, match=r"my_model\.pt.*fid_extractor_path"):
        load_feature_extractor(tmp_path / "my_model.pt", kind="generic")


def test_default_location_is_searched_when_path_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    dirs = default_extractor_dirs()
    assert dirs == [tmp_path / "home" / ".cache" / "medvq", tmp_path / "torch" / "hub" / "checkpoints"]
    with pytest.raises(FileNotFoundError, match="fid_extractor_path") as info:
        load_feature_extractor(None)
    assert all(str(d / "inception-2015-12-05.pt") in str(info.value) for d in dirs)
    dirs[1].mkdir(parents=True)
    save_scripted(FakeInception(), dirs[1] / "inception-2015-12-05.pt")
    assert load_feature_extractor(None).info.file_name == "inception-2015-12-05.pt"


def test_extractor_load_errors(tmp_path, tiny_extractor_file):
    not_torchscript = tmp_path / "inception-2015-12-05.pkl"
    not_torchscript.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"inception-2015-12-05\.pkl is not a TorchScript archive"):
        load_feature_extractor(not_torchscript)
    with pytest.raises(ValueError, match="kind='generic'"):
        load_feature_extractor(tiny_extractor_file)  # no return_features argument: not the Inception file
    maps = load_feature_extractor(save_scripted(FeatureMaps(), tmp_path / "maps.pt"), kind="generic")
    with pytest.raises(ValueError, match=r"maps\.pt must return \(N, F\).*global average pool"):
        maps(torch.zeros(2, 1, 4, 4))
    with pytest.raises(TypeError, match="floating tensor"):
        maps(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"kind": "inception"}, ValueError, "kind must be one of"),
        ({"kind": "generic", "resize_to": 0}, ValueError, "resize_to must be an integer >= 1"),
        ({"kind": "generic", "input_range": (1.0, 0.0)}, ValueError, "input_range must be a pair"),
        ({"resize_to": 224}, ValueError, "apply to kind='generic' only"),
        ({"name": ""}, TypeError, "name must be a non-empty string"),
    ],
)
def test_extractor_argument_errors(tiny_extractor_file, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_feature_extractor(tiny_extractor_file, **kwargs)


# ---------------------------------------------------------------------------------------------- FID on an engine
def test_fid_metric_on_an_ignite_engine_with_a_torchscript_extractor(tiny_extractor_file):
    extractor = load_feature_extractor(tiny_extractor_file, kind="generic")
    fakes, reals = image_batches(10, shift=0.3), image_batches(11)
    engine = Engine(lambda engine, batch: batch)
    metric = FID(extractor, name="rfid", prefix="val_")
    metric.attach(engine, "rfid_metric")
    state = engine.run(
        list(zip(fakes, reals, strict=True)), max_epochs=2
    )  # reset at each epoch: the second equals the first
    expected = fid_from_batches(reals, fakes, extractor)
    assert state.metrics["val_rfid"] == pytest.approx(expected.fid, rel=1e-9)
    assert expected.fid > 0 and expected.extractor == extractor.info == metric.extractor_info
    assert state.metrics["val_rfid_num_real"] == state.metrics["val_rfid_num_fake"] == 12
    # g-FID style: real statistics computed once, then only generated images are fed
    gfid = FID(extractor, real_statistics=feature_statistics(reals, extractor), name="gfid")
    for fake in fakes:
        gfid.update((fake, None))
    assert gfid.compute()["gfid"] == pytest.approx(expected.fid, rel=1e-9)


def test_fid_metric_with_a_mapping_output_and_output_transform():
    metric = FID(lambda x: x.flatten(1), output_transform=lambda out: {"fake": out["rec"], "real": out["img"]})
    engine = Engine(lambda engine, batch: {"rec": batch[0], "img": batch[1]})
    metric.attach(engine, "fid_metric")
    fakes, reals = image_batches(12, shape=(1, 2, 2)), image_batches(13, shape=(1, 2, 2))
    state = engine.run(list(zip(fakes, reals, strict=True)))
    assert state.metrics["fid"] == pytest.approx(fid_from_batches(reals, fakes, lambda x: x.flatten(1)).fid)


def test_fid_metric_errors(tiny_extractor_file):
    flat = lambda x: x.flatten(1)  # noqa: E731
    with pytest.raises(TypeError, match="extractor must be callable"):
        FID("inception")
    with pytest.raises(ValueError, match="num_features"):
        FID(flat, num_features=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        FID(flat, real_statistics=FeatureStatistics.from_features(torch.zeros(1, 4)))
    metric = FID(flat)
    with pytest.raises(NotComputableError):
        metric.compute()
    with pytest.raises(TypeError, match=r"pair \(fake_images, real_images\)"):
        metric.update(torch.zeros(2, 1, 2, 2))
    with pytest.raises(TypeError, match="fake_images must be a floating tensor"):
        metric.update((torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, 1, 2, 2)))
    metric.update((torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)))
    with pytest.raises(NotComputableError, match="1 fake and 1 real"):
        metric.compute()
    with pytest.raises(ValueError, match="F = 8 features"):
        metric.update((torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2)))  # 8 features after 4
    assert int(metric._fake_count) == 1  # the failed batch added nothing
    with_stats = FID(flat, real_statistics=FeatureStatistics.from_features(torch.randn(3, 4)))
    with pytest.raises(ValueError, match="real_statistics is set"):
        with_stats.update((torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)))


# ---------------------------------------------------------------------------------------------- PSNR / SSIM / MS-SSIM
def test_psnr_and_ssim_by_hand_on_constant_images():
    fake, real = torch.zeros(2, 1, 16, 16), torch.full((2, 1, 16, 16), 0.5)  # [0, 1]: 0.5 and 0.75
    result = image_fidelity([(fake, real)], lpips=False)
    assert result["psnr"] == pytest.approx(10 * math.log10(1 / 0.25**2))  # MSE = 0.0625 on [0, 1]
    # the same as data range 2 on [-1, 1] (MSE 0.25)
    assert result["psnr"] == pytest.approx(float(PSNRMetric(max_val=2.0)(fake, real).mean()))
    # constant images have no variance, so SSIM is the luminance term alone; MONAI works in float32, where the
    # variance of a constant is ~1e-7 of rounding, which the contrast term's c2 = 9e-4 turns into a ~5e-4 effect
    c1 = (0.01 * 1.0) ** 2
    assert result["ssim"] == pytest.approx((2 * 0.5 * 0.75 + c1) / (0.5**2 + 0.75**2 + c1), rel=1e-3)
    assert result["num_images"] == 2


def test_identical_images_give_infinite_psnr_and_ssim_one():
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(14)) * 2 - 1
    result = image_fidelity([(images, images)], lpips=False)
    assert result["psnr"] == math.inf
    assert result["ssim"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kernel_size,num_scales", [(11, 5), (7, 3), (5, 2), (3, 4)])
def test_ms_ssim_min_size_is_monai_boundary(kernel_size, num_scales):
    need = ms_ssim_min_size(kernel_size, num_scales)
    metric = MultiScaleSSIMMetric(2, kernel_size=kernel_size, weights=[1.0 / num_scales] * num_scales)
    metric(torch.rand(1, 1, need, need), torch.rand(1, 1, need, need))  # runs
    with pytest.raises((ValueError, RuntimeError)):
        metric(torch.rand(1, 1, need - 1, need), torch.rand(1, 1, need - 1, need))
    assert ms_ssim_min_size() == 176


def test_ms_ssim_not_applicable_at_small_sizes_and_a_value_at_large_ones():
    g = torch.Generator().manual_seed(15)
    small = torch.rand(2, 1, 64, 64, generator=g) * 2 - 1
    result = image_fidelity([(small, small * 0.9)], lpips=False)
    assert result["ms_ssim"] is None
    assert (
        "not applicable" in result["ms_ssim_note"]
        and "176" in result["ms_ssim_note"]
        and "64" in result["ms_ssim_note"]
    )
    large = torch.rand(1, 1, 176, 180, generator=g) * 2 - 1
    result = image_fidelity([(large, large)], lpips=False)
    assert result["ms_ssim"] == pytest.approx(1.0, abs=1e-5) and "ms_ssim_note" not in result
    noisy = image_fidelity([(large + 0.1 * torch.randn(large.shape, generator=g), large)], lpips=False)
    assert 0 < noisy["ms_ssim"] < 1
    # one small batch anywhere in the set makes the whole-set value not applicable, never a partial mean
    mixed = ImageFidelity(lpips=False)
    mixed.update((large, large))
    mixed.update((small, small))
    assert mixed.compute()["ms_ssim"] is None


def test_ssim_not_applicable_below_the_window():
    tiny = torch.zeros(2, 1, 8, 8)
    result = image_fidelity([(tiny, tiny)], lpips=False)
    assert result["ssim"] is None and "win_size = 11" in result["ssim_note"]


@pytest.mark.parametrize("spatial_dims", SPATIAL_DIMS)
def test_image_fidelity_on_an_ignite_engine(spatial_dims):
    shape = (1,) + (12,) * spatial_dims
    reals = image_batches(16, sizes=(2, 3), shape=shape)
    fakes = [(r + 0.05).clamp(-1, 1) for r in reals]
    engine = Engine(lambda engine, batch: batch)
    ImageFidelity(spatial_dims, prefix="val_").attach(engine, "fidelity")
    state = engine.run(list(zip(fakes, reals, strict=True)))
    per_image = torch.cat(
        [PSNRMetric(max_val=2.0, reduction="none")(f, r).reshape(-1) for f, r in zip(fakes, reals, strict=True)]
    )
    assert state.metrics["val_psnr"] == pytest.approx(float(per_image.double().mean()), rel=1e-5)
    assert 0 < state.metrics["val_ssim"] < 1 and state.metrics["val_num_images"] == 5
    assert state.metrics["val_ms_ssim"] is None and state.metrics["val_lpips"] is None
    assert state.metrics["val_lpips_note"].startswith("not applicable" if spatial_dims == 3 else "unavailable")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"spatial_dims": 1}, ValueError, "spatial_dims must be 2 or 3"),
        ({"win_size": 0}, ValueError, "win_size"),
        ({"kernel_sigma": 0.0}, ValueError, "kernel_sigma"),
        ({"ms_ssim_weights": ()}, ValueError, "ms_ssim_weights"),
        ({"lpips_net": "resnet"}, ValueError, "net must be one of"),
        ({"prefix": 1}, TypeError, "prefix"),
    ],
)
def test_image_fidelity_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ImageFidelity(**kwargs)


def test_image_fidelity_update_errors():
    metric = ImageFidelity(lpips=False)
    with pytest.raises(NotComputableError):
        metric.compute()
    with pytest.raises(ValueError, match="same shape"):
        metric.update((torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9)))
    with pytest.raises(ValueError, match="2 spatial axes"):
        metric.update((torch.zeros(2, 1, 8, 8, 8), torch.zeros(2, 1, 8, 8, 8)))
    with pytest.raises(TypeError, match="pair"):
        metric.update([torch.zeros(2, 1, 8, 8)])


# ---------------------------------------------------------------------------------------------- LPIPS
def test_lpips_unavailable_is_reported_never_zero(monkeypatch):
    real_find_spec = fidelity_module.importlib.util.find_spec
    monkeypatch.setattr(
        fidelity_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lpips" else real_find_spec(name, *a),
    )
    status = lpips_status()
    assert not status.available and "`lpips` package is not installed" in status.reason
    images = torch.zeros(1, 3, 16, 16)
    result = image_fidelity([(images, images)])
    assert result["lpips"] is None and result["lpips_note"] == status.reason


def test_lpips_is_averaged_when_available(monkeypatch):
    """With LPIPS available (faked here: the package is not installed), its per-image distances are averaged."""
    seen = []

    def fake_lpips(net, device):
        def model(x, y):
            seen.append(x.shape)
            return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)

        return model

    monkeypatch.setattr(fidelity_module, "lpips_status", lambda net: LPIPSStatus(True, "fake"))
    monkeypatch.setattr(fidelity_module, "_load_lpips", fake_lpips)
    fake, real = torch.zeros(2, 1, 16, 16), torch.stack([torch.full((1, 16, 16), 0.2), torch.full((1, 16, 16), 0.4)])
    result = image_fidelity([(fake, real)])
    assert result["lpips"] == pytest.approx(0.3) and "lpips_note" not in result
    assert seen == [torch.Size([2, 3, 16, 16])]  # grayscale repeated to RGB


# ---------------------------------------------------------------------------------------------- DDP
DDP_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from ignite.engine import Engine
    from medvq.metrics import FID, ImageFidelity

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    g = torch.Generator().manual_seed(rank)
    batches = [(torch.rand(3 + rank, 1, 4 + 8 * rank, 12, generator=g) * 2 - 1,) * 2 for _ in range(2)]
    batches = [(f * 0.5 + 0.3, r) for f, r in batches]
    engine = Engine(lambda engine, batch: batch)
    FID(lambda x: x.mean(dim=(2, 3)).repeat(1, 3) * torch.tensor([1.0, 2.0, -1.0])).attach(engine, "fid_metric")
    ImageFidelity(lpips=False).attach(engine, "fidelity")
    state = engine.run(batches)
    torch.save({k: v for k, v in state.metrics.items() if k in ("fid", "fid_num_real", "psnr", "ssim", "num_images",
                "ms_ssim_note")}, f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


def test_metrics_are_reduced_over_ddp_ranks(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(worker),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank gets the whole-set result
    # the same numbers in one process over both ranks' batches
    fid, fidelity = (
        FID(lambda x: x.mean(dim=(2, 3)).repeat(1, 3) * torch.tensor([1.0, 2.0, -1.0])),
        ImageFidelity(lpips=False),
    )
    for rank in range(2):
        g = torch.Generator().manual_seed(rank)
        for _ in range(2):
            real = torch.rand(3 + rank, 1, 4 + 8 * rank, 12, generator=g) * 2 - 1
            fid.update((real * 0.5 + 0.3, real))
            fidelity.update((real * 0.5 + 0.3, real))
    single = {**fid.compute(), **fidelity.compute()}
    assert ranks[0]["fid_num_real"] == single["fid_num_real"] == 14
    # equal up to summation order (float64 sums, float32 per-image PSNR)
    assert ranks[0]["fid"] == pytest.approx(single["fid"], rel=1e-9) and single["fid"] > 0.01
    assert ranks[0]["psnr"] == pytest.approx(single["psnr"], rel=1e-9)
    assert ranks[0]["num_images"] == 14
    # rank 0 has 4-pixel sides, too small for SSIM: the whole-set SSIM is not applicable, with the global smallest side
    assert ranks[0]["ssim"] is None and single["ssim"] is None
    assert "side of 4" in ranks[0]["ms_ssim_note"] and ranks[0]["ms_ssim_note"] == single["ms_ssim_note"]
