"""medvq.inference.TokenSaver on real files: a NIfTI volume that nibabel ships (33 x 41 x 25, LAS), a copy of it stored
in another orientation, and a grayscale PNG, run through a tiny untrained tokenizer by TokenizerEvaluator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, LoadImage, Orientation, ResizeWithPadOrCrop
from PIL import Image

from medvq.engines import TokenizerEvaluator
from medvq.inference import TokenSaver
from medvq.networks import vqgan_tiny
from medvq.transforms import image_preprocessing, to_input_units

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
ROI = 32
FACTOR = 4  # vqgan_tiny
GRID = (ROI // FACTOR,) * 3


@pytest.fixture(scope="module")
def network_3d() -> torch.nn.Module:
    torch.manual_seed(0)
    return vqgan_tiny(spatial_dims=3, in_channels=1, num_embeddings=16, embedding_dim=4)


@pytest.fixture(scope="module")
def permuted(tmp_path_factory) -> Path:
    """anatomical.nii stored as P, S, R (axes permuted and flipped; same voxels in the same world positions)."""
    source = nib.load(ANATOMICAL)
    to_psr = nib.orientations.ornt_transform(nib.orientations.io_orientation(source.affine),
                                             nib.orientations.axcodes2ornt(("P", "S", "R")))
    path = tmp_path_factory.mktemp("permuted") / "permuted.nii.gz"
    nib.save(source.as_reoriented(to_psr), str(path))
    assert nib.aff2axcodes(nib.load(path).affine) == ("P", "S", "R") and nib.load(path).shape == (41, 25, 33)
    return path


def _run(files: list[Path], transform: Compose, network: torch.nn.Module, saver: TokenSaver,
         batch_size: int = 2) -> list[dict]:
    """Tokenize ``files``; returns each iteration's batch and output (copies), as the saver saw them."""
    loader = DataLoader(Dataset([{"image": str(f)} for f in files], transform=transform), batch_size=batch_size)
    evaluator = TokenizerEvaluator("cpu", loader, network, val_handlers=[saver])
    seen: list[dict] = []

    @evaluator.on(Events.ITERATION_COMPLETED)
    def _keep(engine):
        seen.append({"batch": engine.state.batch, "output": {k: v.clone() for k, v in engine.state.output.items()}})

    evaluator.run()
    return seen


def _summary(folder: Path) -> tuple[dict, list[dict]]:
    with open(folder / "index.csv", newline="") as f:
        return json.loads((folder / "tokens.json").read_text()), list(csv.DictReader(f))


def test_volumes_go_back_to_the_source_grid_orientation_and_intensities(tmp_path, network_3d, permuted):
    transform = image_preprocessing(modality="mr", spatial_dims=3, roi_size=ROI, train=False)
    saver = TokenSaver(tmp_path / "out", transform=transform, modality="mr", metadata={"roi_size": ROI})
    (seen,) = _run([ANATOMICAL, permuted], transform, network_3d, saver)  # one batch, two orientations
    out, pred = tmp_path / "out", seen["output"]["pred"]  # (2, 1, 32, 32, 32) in [-1, 1], RAS
    intensity = seen["batch"]["image_intensity_range"]  # (2, 2): the MR percentile values

    summary, rows = _summary(out)
    assert summary["run"] == {"roi_size": ROI} and summary["num_images"] == 2
    assert [i["recon"] for i in summary["items"]] == ["anatomical_recon.nii.gz", "permuted_recon.nii.gz"]
    assert [(i["format"], i["space"], tuple(i["token_grid"])) for i in summary["items"]] == [
        ("nifti", "source", GRID)] * 2
    assert [(r["format"], r["space"], r["token_grid"]) for r in rows] == [("nifti", "source", "8x8x8")] * 2

    source_data = np.asarray(nib.load(ANATOMICAL).dataobj, dtype=np.float32)
    recons = {}
    for item, source, (low, high) in zip(summary["items"], (ANATOMICAL, permuted), intensity.tolist()):
        source_image, recon = nib.load(source), nib.load(out / item["recon"])
        # 1. the source grid: shape and affine of the file (so orientation too), float32
        assert recon.shape == source_image.shape
        np.testing.assert_allclose(recon.affine, source_image.affine, atol=1e-4)
        assert recon.get_data_dtype() == np.float32
        # 2. MR source scale: within the recorded percentile values, which lie within the source's values
        values = recon.get_fdata()
        assert low - 1e-2 <= values.min() and values.max() <= high + 1e-2
        assert source_data.min() <= low < high <= source_data.max()
        # 3. token maps: the latent grid of the ROI
        tokens = np.load(out / item["tokens"])
        assert tokens.dtype == np.int64 and tokens.shape == GRID and 0 <= tokens.min() and tokens.max() < 16
        recons[source] = nib.as_closest_canonical(recon).get_fdata()  # (33, 41, 25), RAS

    # 4. the inverse undid each file's own orientation: both RAS views are the same reconstruction
    np.testing.assert_allclose(recons[ANATOMICAL], recons[permuted], atol=1e-3)

    # 5. placement: the spatial preprocessing applied to the written file gives back the network's output (in source
    #    units) voxel for voxel, wherever the ROI overlaps the source (NaN marks the ROI's padding)
    spatial = Compose([LoadImage(image_only=True, ensure_channel_first=True), Orientation(axcodes="RAS", labels=None),
                       ResizeWithPadOrCrop(ROI, mode="constant", value=float("nan"))])
    for i, item in enumerate(summary["items"]):
        again = spatial(str(out / item["recon"]))[0].numpy()  # (32, 32, 32)
        expected = to_input_units(pred[i], "mr", intensity_range=intensity[i])[0].numpy()
        inside = ~np.isnan(again)
        assert inside.sum() == 32 * 32 * 25  # X and Y cropped (33 -> 32, 41 -> 32), Z padded (25 -> 32)
        np.testing.assert_allclose(again[inside], expected[inside], rtol=1e-5, atol=1e-2)

    # 6. the source voxels the centre crop cut off (one RAS x slab of 33) were not reconstructed: the low end
    canonical = recons[ANATOMICAL]
    low = float(intensity[0, 0])
    assert np.allclose(canonical[ROI:], low, atol=1e-2) and not np.allclose(canonical[:ROI], low, atol=1e-2)


def test_without_transform_volumes_stay_on_the_preprocessed_grid(tmp_path, network_3d, permuted):
    transform = image_preprocessing(modality="mr", spatial_dims=3, roi_size=ROI, train=False)
    (seen,) = _run([permuted], transform, network_3d, TokenSaver(tmp_path / "out", modality="mr"), batch_size=1)
    summary, _ = _summary(tmp_path / "out")
    (item,) = summary["items"]
    assert (item["format"], item["space"]) == ("nifti", "preprocessed")
    recon = nib.load(tmp_path / "out" / item["recon"])
    assert recon.shape == (ROI,) * 3
    # the batch MetaTensor's current affine: RAS after Orientationd, shifted by the crop / pad
    affine = seen["batch"]["image"].affine[0].numpy()
    np.testing.assert_allclose(recon.affine, affine, atol=1e-4)
    assert nib.aff2axcodes(recon.affine) == ("R", "A", "S")
    intensity = seen["batch"]["image_intensity_range"][0]
    expected = to_input_units(seen["output"]["pred"][0], "mr", intensity_range=intensity)
    np.testing.assert_allclose(recon.get_fdata(), expected[0].numpy(), rtol=1e-5, atol=1e-2)

    # and without modality: the network's [-1, 1] values
    _run([permuted], transform, network_3d, TokenSaver(tmp_path / "raw"), batch_size=1)
    raw = nib.load(tmp_path / "raw" / "permuted_recon.nii.gz").get_fdata()
    np.testing.assert_allclose(raw, seen["output"]["pred"][0, 0].numpy(), atol=1e-6)


def test_a_grayscale_png_is_written_as_a_one_channel_png(tmp_path):
    from skimage.data import camera

    source = tmp_path / "xray.png"
    Image.fromarray(camera()).resize((48, 40)).save(source)  # (H, W) = (40, 48), mode "L"
    transform = image_preprocessing(modality="xray", spatial_dims=2, image_size=ROI, train=False)
    torch.manual_seed(0)
    network = vqgan_tiny(spatial_dims=2, in_channels=1, num_embeddings=16, embedding_dim=4)
    saver = TokenSaver(tmp_path / "out", modality="xray")  # 2D: the PNG stays (x + 1) * 127.5
    (seen,) = _run([source], transform, network, saver, batch_size=1)
    summary, rows = _summary(tmp_path / "out")
    (item,) = summary["items"]
    assert (item["recon"], item["format"], item["space"], item["token_grid"]) == (
        "xray_recon.png", "png", "preprocessed", [8, 8])
    assert rows[0]["format"] == "png"
    png = Image.open(tmp_path / "out" / item["recon"])
    assert png.mode == "L" and png.size == (ROI, ROI)
    expected = ((seen["output"]["pred"][0, 0] + 1) * 127.5).round().numpy().astype(np.uint8)
    assert np.array_equal(np.array(png), expected)
    assert np.load(tmp_path / "out" / item["tokens"]).shape == (8, 8)


def test_token_saver_names_bad_arguments():
    with pytest.raises(ValueError, match="modality must be one of"):
        TokenSaver("out", modality="pet")
    with pytest.raises(ValueError, match="window needs modality"):
        TokenSaver("out", window=(0, 100))
    with pytest.raises(ValueError, match="window applies to modality 'ct', 'xray' and 'rgb'"):
        TokenSaver("out", modality="mr", window=(0, 100))
    with pytest.raises(ValueError, match="window must be two numbers"):
        TokenSaver("out", modality="ct", window=(100, 0))
    with pytest.raises(TypeError, match="transform must be the inference preprocessing .* got function"):
        TokenSaver("out", transform=lambda d: d)


def test_transform_without_recorded_operations_fails_naming_them(tmp_path, network_3d):
    transform = image_preprocessing(modality="mr", spatial_dims=3, roi_size=ROI, train=False)
    batches = [{"image": torch.zeros(1, 1, 16, 16, 16)}]  # plain tensors: no MetaTensor history to invert
    evaluator = TokenizerEvaluator("cpu", batches, network_3d, val_handlers=[TokenSaver(tmp_path, transform=transform)])
    with pytest.raises(ValueError, match="carries no applied_operations"):
        evaluator.run()
