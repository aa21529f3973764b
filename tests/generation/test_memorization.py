"""The memorization check: exact chunked search against ``torch.cdist``, the calibration rule on hand-computable
distances, and the check itself on real images (the project's fundus pipeline and skimage photographs) with a
tokenizer really trained for a few dozen steps: training images fed back are flagged, reconstructions of held-out
images are not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import skimage.data
import torch
from monai.data import DataLoader, Dataset
from PIL import Image
from torch import nn

from medvq.data.synthetic import make_fundus_dataset
from medvq.generation.memorization import (
    calibrate,
    memorization_check,
    nearest_neighbours,
    tokenizer_features,
    tokenizer_reconstruction,
)
from medvq.networks import VQGANTokenizer, vqgan_tiny
from medvq.transforms import fundus_preprocessing

SIDE = 32
NUM_TRAIN, NUM_CALIBRATION, NUM_UNSEEN = 24, 10, 6


# ---------------------------------------------------------------------------------------------------- search
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000, 2**24])
def test_nearest_neighbours_equals_brute_force_cdist(chunk_size):
    g = torch.Generator().manual_seed(0)
    queries, references = torch.randn(37, 13, generator=g), torch.randn(53, 13, generator=g)
    found = nearest_neighbours(queries, references, chunk_size=chunk_size)
    brute = torch.cdist(queries.double(), references.double())  # (Q, R)
    assert torch.equal(found.indices, brute.argmin(1))
    torch.testing.assert_close(found.distances.double(), brute.min(1).values, rtol=1e-5, atol=1e-6)
    assert found.distances.shape == (37,) and found.indices.dtype == torch.long


def test_nearest_neighbours_gives_exact_zero_for_a_duplicate_far_from_the_origin():
    # the expanded form ||q||^2 - 2 q.r + ||r||^2 loses ~1e-7 * ||q||^2 (here ~1e-1) to cancellation in float32;
    # the winner's distance is recomputed from the difference
    g = torch.Generator().manual_seed(1)
    references = 100 + torch.randn(20, 1000, generator=g)
    found = nearest_neighbours(references[[3, 11, 3]], references, chunk_size=500)
    assert found.indices.tolist() == [3, 11, 3]
    assert found.distances.tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------------- calibration
# train at 0 and 10 (F = 1, so RMS = |difference|); the copies' distance is the higher order statistic of d_recon,
# the different images' the lower one of min(d_real, d_decoded)
@pytest.mark.parametrize(
    "held, recon, status, threshold, real_distance",
    [
        ([1.0, 4.0], [1.1, 4.2], "separated", math.sqrt(0.2 * 1.0), 1.0),  # 1 / 0.2 = 5 >= 4: geometric mean
        ([3.0, 6.0], [2.0, 6.5], "weak", 1.0, 2.0),  # recon 2.0 sits closer to 0 than its original 3.0; cap 2 / 2
        ([1.0, 4.0], [2.2, 4.5], "overlapping", 0.5, 1.0),  # d_recon 1.2 >= 1.0
        ([1.0, 4.0], [1.0, 4.0], "lossless", 0.5, 1.0),
    ],
)
def test_calibrate_rule_on_hand_numbers(held, recon, status, threshold, real_distance):
    result = calibrate(torch.tensor([[0.0], [10.0]]), torch.tensor(held)[:, None], torch.tensor(recon)[:, None])
    assert result.status == status
    assert result.real_distance == pytest.approx(real_distance)
    assert result.threshold == pytest.approx(threshold)
    assert result.real_flagged_fraction == 0.0
    assert bool(result.notes) == (status != "separated")
    if status == "separated":
        assert result.copy_missed_fraction == 0.0 and result.separation == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------------- real images
@pytest.fixture(scope="module")
def fundus(tmp_path_factory):
    """The fundus images through the project's preprocessing, split train / calibration / unseen, and a small
    tokenizer trained on the training images only (continuous phase, MSE)."""
    items = make_fundus_dataset(tmp_path_factory.mktemp("fundus"), num_images=NUM_TRAIN + NUM_CALIBRATION + NUM_UNSEEN,
                                image_size=SIDE)
    transform = fundus_preprocessing(image_size=SIDE, train=False)
    images = torch.stack([transform(item)["image"].as_tensor() for item in items])  # (N, 3, S, S) in [-1, 1]
    train = images[:NUM_TRAIN]
    # factor 2, 8/16 channels: trains in seconds on a CPU and reconstructs unseen fundus images better than the
    # factor-4 vqgan_tiny does in the same time
    torch.manual_seed(0)
    net = VQGANTokenizer(2, channels=(8, 16), num_res_blocks=1, norm_num_groups=4, z_channels=16, embedding_dim=4,
                         attention_levels=(False, False), with_nonlocal_attn=False, num_embeddings=64, quantize=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):  # ~5 s on one CPU thread; reconstructions stay blurred (RMS error ~0.1 of the [-1, 1] range)
        batch = train[torch.randperm(NUM_TRAIN, generator=g)[:8]]
        loss = nn.functional.mse_loss(net(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"items": items, "transform": transform, "train": train, "net": net.eval(),
            "calibration": images[NUM_TRAIN : NUM_TRAIN + NUM_CALIBRATION], "unseen": images[-NUM_UNSEEN:]}


def test_flags_training_images_fed_back_and_not_reconstructions_of_held_out_images(fundus, tmp_path):
    net, train, calibration, unseen = fundus["net"], fundus["train"], fundus["calibration"], fundus["unseen"]
    reconstruct, features = tokenizer_reconstruction(net), tokenizer_features(net)
    # 2 training images fed back, reconstructions of 6 unseen and of the 10 calibration images, and reconstructions
    # of 6 training images (what a generator that memorized them would produce through the tokenizer)
    samples = torch.cat([train[[5, 17]], reconstruct(unseen), reconstruct(calibration), reconstruct(train[:6])])
    # the training set streams from a MONAI DataLoader: batches are dicts of MetaTensors carrying the file names
    loader = DataLoader(Dataset(fundus["items"][:NUM_TRAIN], fundus["transform"]), batch_size=7)
    report = memorization_check(samples, loader, calibration, reconstruct=reconstruct, features=features,
                                output_dir=tmp_path, pairs=4, progress=False)

    assert (report.num_samples, report.num_train, report.num_held_out) == (24, NUM_TRAIN, NUM_CALIBRATION)
    assert set(report.spaces) == {"pixel", "latent"}
    for space, result in report.spaces.items():
        assert result.nearest_index[:2] == [5, 17], space
        assert result.nearest_name[:2] == [fundus["items"][5]["image"], fundus["items"][17]["image"]]
        assert result.flagged[:2] == [True, True], space
        assert max(result.distances[:2]) < (1e-12 if space == "pixel" else 1e-4), space
        held_out = slice(2, 2 + NUM_UNSEEN + NUM_CALIBRATION)
        assert not any(result.flagged[held_out]), (space, result.distances[held_out], result.threshold)
        assert min(result.distances[held_out]) > result.threshold > 0
        assert result.calibration.copy_distance > 0  # the tokenizer's reconstructions are imperfect
        assert result.calibration.real_flagged_fraction == 0
    # through the tokenizer, a memorized training image is no exact copy; the latent space still catches most here
    latent = report.spaces["latent"]
    caught = [q for q in range(18, 24) if latent.flagged[q]]
    assert len(caught) >= 3, latent.distances[18:]
    assert all(latent.nearest_index[q] == q - 18 for q in caught)
    assert report.flagged[:18] == [True, True] + [False] * 16
    assert report.fraction_flagged == sum(report.flagged) / 24

    saved = json.loads((tmp_path / "memorization.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["spaces"]["latent"]["calibration"]["status"] in {"separated", "weak", "overlapping"}
    assert report.files == {"pairs": str(tmp_path / "memorization_pairs.png"), "json": str(tmp_path / "memorization.json")}
    with Image.open(tmp_path / "memorization_pairs.png") as png:
        assert png.mode == "RGB" and "synthetic samples" in png.info["Description"]
        pixels = np.asarray(png)
    tile = SIDE * math.ceil(96 / SIDE)  # enlarged to >= 96 px
    assert pixels.shape[0] == 18 + 4 * (tile + 6)  # header + 4 rows
    # the first row is a fed-back training image: its sample tile equals its nearest training image's tile
    first = pixels[18 : 18 + tile]
    assert np.array_equal(first[:, :tile], first[:, tile + 6 : 2 * tile + 6])


def _volumes() -> torch.Tensor:
    """Grey skimage photographs as (1, 16, 16, 16) volumes: slice z is the 16 x 16 window at row z of the photo."""
    volumes = []
    for name in ("camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "clock", "cell",
                 "microaneurysms", "astronaut", "coffee", "rocket"):
        photo = getattr(skimage.data, name)()
        photo = photo if photo.ndim == 2 else photo[..., :3].mean(-1)
        small = np.asarray(Image.fromarray(photo.astype(np.uint8)).resize((32, 32), Image.BILINEAR), np.float32)
        volume = np.stack([small[z : z + 16, 8:24] for z in range(16)], axis=-1)  # (16, 16, 16)
        volumes.append(torch.from_numpy(volume / 127.5 - 1)[None])
    return torch.stack(volumes)  # (14, 1, 16, 16, 16)


def test_volumes_fed_back_are_flagged_and_the_pairs_png_shows_orthogonal_views(tmp_path):
    volumes = _volumes()
    train, held = volumes[:10], volumes[10:]
    torch.manual_seed(0)
    encoder = vqgan_tiny(spatial_dims=3, in_channels=1, quantize=False)

    def reconstruct(x: torch.Tensor) -> torch.Tensor:  # a lossy codec: trilinear down- and upsampling by 2
        small = nn.functional.interpolate(x, scale_factor=0.5, mode="trilinear")
        return nn.functional.interpolate(small, size=x.shape[2:], mode="trilinear")

    samples = [train[[7]], reconstruct(held)]  # an iterable of batches
    report = memorization_check(samples, train, held, reconstruct=reconstruct, features=tokenizer_features(encoder),
                                train_names=[f"vol{i}" for i in range(10)], output_dir=tmp_path, batch_size=3,
                                pairs=2, progress=False)
    for result in report.spaces.values():
        assert result.nearest_index[0] == 7 and result.nearest_name[0] == "vol7"
        assert result.flagged == [True, False, False, False, False]
        assert result.distances[0] < 1e-4
    with Image.open(tmp_path / "memorization_pairs.png") as png:
        width, height = png.size
    tile = 16 * math.ceil(96 / 16)
    assert height == 18 + 2 * (tile + 6) and width == 3 * (3 * tile + 6) + 380  # axial | coronal | sagittal per tile


# ---------------------------------------------------------------------------------------------------- errors
def _images(n: int, side: int = 8) -> torch.Tensor:
    return torch.linspace(-1, 1, n * 3 * side * side).reshape(n, 3, side, side)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(3), torch.zeros(2, 3)), "queries must be a 2-D tensor"),
        ((torch.zeros(2, 3), torch.zeros(2, 4)), "same F >= 1 features"),
        ((torch.zeros(2, 3), torch.zeros(0, 3)), "references is empty"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), 0), "chunk_size must be an integer >= 1"),
    ],
)
def test_nearest_neighbours_errors(args, match):
    with pytest.raises(ValueError, match=match):
        nearest_neighbours(*args)


def test_calibrate_errors():
    with pytest.raises(ValueError, match="held_out_features must be .* H >= 2"):
        calibrate(torch.zeros(3, 2), torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="held_out_recon_features must have the shape"):
        calibrate(torch.zeros(3, 2), torch.zeros(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"train_features must be \(N, 2\)"):
        calibrate(torch.zeros(3, 5), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="real_quantile must be a number in"):
        calibrate(torch.zeros(3, 2), torch.zeros(2, 2), torch.zeros(2, 2), real_quantile=1.5)
    with pytest.raises(TypeError, match="encode"):
        tokenizer_features(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="forward_with_output"):
        tokenizer_reconstruction(nn.Linear(2, 2))


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"held_out_images": _images(1)}, ValueError, "held_out_images must hold at least 2 images"),
        ({"held_out_images": _images(3, side=4)}, ValueError, r"held_out_images must hold images of shape \(C, \*sp"),
        ({"samples": _images(0)}, ValueError, "samples is empty"),
        ({"samples": _images(2)[0]}, ValueError, r"samples must hold \(B, C, H, W\) images"),
        ({"train_images": [_images(2, side=4)]}, ValueError, "train_images must hold images of shape"),
        ({"train_images": []}, ValueError, "train_images is empty"),
        ({"train_images": [{"img": _images(2)}]}, ValueError, "without the image_key 'image'"),
        ({"train_images": 3}, TypeError, "train_images must be a tensor or an iterable"),
        ({"reconstruct": lambda x: x[:, :1]}, ValueError, "reconstruct must return images of the input's shape"),
        ({"reconstruct": None}, TypeError, "reconstruct must be a callable"),
        ({"features": lambda x: x[:1].flatten(1)}, ValueError, "features must return one row per image"),
        ({"features": lambda x: x.flatten(1) * math.nan}, ValueError, "features returned non-finite values"),
        ({"train_names": ["a"]}, ValueError, "train_names has 1 names for 4 training images"),
        ({"sample_names": ["a"]}, ValueError, "sample_names has 1 names for 2 samples"),
        ({"pairs": -1}, ValueError, "pairs must be an integer >= 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"copy_quantile": 2}, ValueError, "copy_quantile must be a number in"),
    ],
)
def test_memorization_check_errors(change, error, match):
    kwargs = {"samples": _images(2), "train_images": _images(4), "held_out_images": _images(3),
              "reconstruct": _identity, "progress": False, **change}
    with pytest.raises(error, match=match):
        memorization_check(**kwargs)
