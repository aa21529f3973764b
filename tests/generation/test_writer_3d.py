"""Generation outputs for volumes and grey images: NIfTI samples marked synthetic, their sidecars and grids (the
writer's ``grid.png`` and :class:`~medvq.handlers.SampleGridHandler`'s TensorBoard image), on tiny untrained models."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from medvq.generation import NIFTI_DESCRIPTION, SYNTHETIC_NOTICE, batch_seed, sample_views, write_samples
from medvq.handlers import SampleGridHandler
from medvq.handlers.monitoring import orthogonal_views
from medvq.networks import msvqgan_tiny, sample_var, var_tiny
from medvq.transforms import to_input_units

SIDE = 16  # msvqgan_tiny downsamples by 4: a 4^3 last scale decodes 16^3 volumes
SCALES_3D = (1, 2, (2, 3, 4), 4)  # ints are the same on every axis; one per-axis tuple
SPACING = (0.8, 0.9, 2.5)


def _models(spatial_dims: int, scales):
    torch.manual_seed(0)
    tokenizer = msvqgan_tiny(spatial_dims=spatial_dims, in_channels=1, scales=scales, num_embeddings=16,
                             embedding_dim=4)
    var = var_tiny(num_embeddings=16, embedding_dim=4, scale_lengths=tokenizer.quantizer.scale_lengths,
                   num_conditions=2)
    return tokenizer.eval(), var


@pytest.fixture(scope="module")
def models_3d():
    return _models(3, SCALES_3D)


def _uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def test_tiny_3d_tokenizer_decodes_what_sample_var_draws(models_3d):
    tokenizer, var = models_3d
    assert tokenizer.downsample_factor == 4 and tokenizer.image_shape == (SIDE,) * 3
    assert tokenizer.quantizer.scale_lengths == (1, 8, 24, 64)
    condition = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    maps = sample_var(var, tokenizer.quantizer, condition, guidance=1.5, top_k=8,
                      generator=torch.Generator().manual_seed(1))
    assert [tuple(m.shape) for m in maps] == [(2, 1, 1, 1), (2, 2, 2, 2), (2, 2, 3, 4), (2, 4, 4, 4)]
    uncached = sample_var(var, tokenizer.quantizer, condition, guidance=1.5, top_k=8, use_kv_cache=False,
                          generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(maps, uncached))
    tokens = tokenizer.quantizer.flatten_indices(maps)
    assert tokens.shape == (2, 97)
    assert all(torch.equal(a, b) for a, b in zip(tokenizer.quantizer.unflatten_indices(tokens), maps))
    with torch.no_grad():
        volumes = tokenizer.decode_indices(maps)
        assert volumes.shape == (2, 1, SIDE, SIDE, SIDE) and torch.equal(volumes, tokenizer.decode_indices(tokens))


def test_write_samples_writes_nifti_volumes_marked_synthetic(models_3d, tmp_path):
    tokenizer, var = models_3d
    board = tmp_path / "tb"
    writer = SummaryWriter(str(board))
    kwargs = {"conditions": ["A", "A+B"], "class_names": ["A", "B"], "num_per_condition": 3, "batch_size": 2,
              "guidance": 1.5, "top_k": 8, "progress": False, "spacing": SPACING, "modality": "ct"}
    records = write_samples(var, tokenizer, output_dir=tmp_path / "one", summary_writer=writer, **kwargs)
    writer.close()
    again = write_samples(var, tokenizer, output_dir=tmp_path / "two", **kwargs)
    assert [r["file"] for r in records] == ["A/A_0000.nii.gz", "A/A_0001.nii.gz", "A/A_0002.nii.gz",
                                            "A+B/A+B_0000.nii.gz", "A+B/A+B_0001.nii.gz", "A+B/A+B_0002.nii.gz"]
    for record, other in zip(records, again):
        image = nib.load(tmp_path / "one" / record["file"])
        voxels = np.asarray(image.dataobj)
        assert voxels.shape == (SIDE,) * 3 and image.get_data_dtype() == np.float32
        assert np.array_equal(image.affine, np.diag([*SPACING, 1.0]).astype(np.float32))  # NIfTI stores float32
        assert image.header["descrip"].tobytes().rstrip(b"\0").decode() == NIFTI_DESCRIPTION
        assert image.header.get_xyzt_units()[0] == "mm"
        assert SYNTHETIC_NOTICE in image.header.extensions[0].get_content().decode()
        assert -1000 <= voxels.min() and voxels.max() <= 1000  # ct: Hounsfield units of the default window
        # same seed, same voxels; and the sidecar's tokens regenerate them
        assert np.array_equal(voxels, np.asarray(nib.load(tmp_path / "two" / other["file"]).dataobj))
        with torch.no_grad():
            decoded = tokenizer.decode_indices(torch.tensor([record["tokens"]])).clamp(-1, 1)
        assert np.allclose(voxels, to_input_units(decoded, "ct")[0, 0].numpy(), atol=0.05)  # batch-size rounding
    sidecar = json.loads((tmp_path / "one" / "A+B" / "A+B_0002.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["notice"] == SYNTHETIC_NOTICE
    assert sidecar["format"] == "nifti" and sidecar["spacing"] == list(SPACING) and sidecar["shape"] == [SIDE] * 3
    assert sidecar["intensity"]["units"] == "Hounsfield units" and sidecar["intensity"]["range"] == [-1000, 1000]
    assert sidecar["condition"]["labels"] == ["A", "B"] and sidecar["batch_seed"] == batch_seed(0, "A+B", 1)
    assert sidecar["index_in_batch"] == 0 and sidecar["batch_size"] == 1 and len(sidecar["tokens"]) == 97
    summary = json.loads((tmp_path / "one" / "samples.json").read_text())
    assert summary["format"] == "nifti" and len(summary["records"]) == 6 and summary["spacing"] == list(SPACING)
    # grid.png: a row per condition, each volume as its axial | coronal | sagittal middle slices, grey
    grid = np.asarray(Image.open(tmp_path / "one" / "grid.png"))
    assert grid.shape == (2 * SIDE, 3 * 3 * SIDE)
    with torch.no_grad():
        first = tokenizer.decode_indices(torch.tensor([records[0]["tokens"]])).clamp(-1, 1)
    assert np.array_equal(grid[:SIDE, : 3 * SIDE], _uint8(orthogonal_views(first[0]))[0])
    events = EventAccumulator(str(board))
    events.Reload()
    (event,) = events.Images("samples")
    assert (event.height, event.width) == grid.shape


def test_mr_volumes_stay_in_model_units_without_a_reference_range(models_3d, tmp_path):
    tokenizer, var = models_3d
    kwargs = {"conditions": ["A"], "class_names": ["A", "B"], "num_per_condition": 1, "top_k": 8, "progress": False}
    plain = write_samples(var, tokenizer, output_dir=tmp_path / "plain", modality="mr", **kwargs)[0]
    scaled = write_samples(var, tokenizer, output_dir=tmp_path / "scaled", modality="mr",
                           intensity_range=(10.0, 410.0), **kwargs)[0]
    unit = np.asarray(nib.load(tmp_path / "plain" / plain["file"]).dataobj)
    assert -1 <= unit.min() and unit.max() <= 1 and plain["intensity"]["range"] is None
    assert plain["intensity"]["units"] == "model units [-1, 1]" and "no absolute unit" in plain["intensity"]["note"]
    assert plain["spacing"] == [1.0, 1.0, 1.0]  # the default: 1 mm
    assert np.array_equal(nib.load(tmp_path / "plain" / plain["file"]).affine, np.eye(4))
    mapped = np.asarray(nib.load(tmp_path / "scaled" / scaled["file"]).dataobj)
    assert np.allclose(mapped, (unit + 1) / 2 * 400 + 10, atol=1e-3) and scaled["intensity"]["range"] == [10, 410]
    bad = {**kwargs, "output_dir": tmp_path / "bad"}
    with pytest.raises(ValueError, match="window applies to modality 'ct', 'xray' and 'rgb'"):
        write_samples(var, tokenizer, modality="mr", window=(0, 1), **bad)
    with pytest.raises(ValueError, match=r"intensity_range need modality"):
        write_samples(var, tokenizer, intensity_range=(0, 1), **bad)
    with pytest.raises(ValueError, match=r"modality must be one of \['ct', 'mr', 'xray', 'rgb'\] or None, got 'pet'"):
        write_samples(var, tokenizer, modality="pet", **bad)
    with pytest.raises(ValueError, match=r"spacing must be 3 finite numbers, got \(1.0, 1.0\)"):
        write_samples(var, tokenizer, spacing=(1.0, 1.0), **bad)
    with pytest.raises(ValueError, match=r"spacing must be positive"):
        write_samples(var, tokenizer, spacing=(1.0, 0.0, 1.0), **bad)
    with pytest.raises(ValueError, match=r"window must be \(low, high\) with low < high"):
        write_samples(var, tokenizer, modality="ct", window=(100, -100), **bad)


def test_sample_grid_handler_sends_orthogonal_slices_to_tensorboard(models_3d, tmp_path):
    tokenizer, var = models_3d
    writer = SummaryWriter(str(tmp_path / "tb"))
    handler = SampleGridHandler(var, tokenizer, ["A", "null"], ["A", "B"], summary_writer=writer,
                                output_dir=tmp_path / "png", samples_per_condition=2, top_k=8)
    engine = Engine(lambda engine, batch: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    writer.close()
    png = np.asarray(Image.open(tmp_path / "png" / "samples_epoch0001.png"))
    assert png.shape == (2 * SIDE, 2 * 3 * SIDE, 3) and (png[..., 0] == png[..., 2]).all()  # grey as RGB
    maps = sample_var(var, tokenizer.quantizer, torch.tensor([[1.0, 0.0]] * 2), guidance=2.5, top_k=8,
                      generator=torch.Generator().manual_seed(0))  # row 0: the handler's seed + 0
    with torch.no_grad():
        views = sample_views(tokenizer.decode_indices(maps).clamp(-1, 1))  # (2, 1, S, 3 S)
    assert views.shape == (2, 1, SIDE, 3 * SIDE)
    assert np.array_equal(png[:SIDE, : 3 * SIDE, 0], _uint8(views[0, 0]))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    (event,) = events.Images("samples")
    assert event.step == 1 and np.array_equal(np.asarray(Image.open(io.BytesIO(event.encoded_image_string))), png)


def test_grey_2d_samples_are_single_channel_png(tmp_path):
    tokenizer, var = _models(2, (1, 2, 4))
    records = write_samples(var, tokenizer, ["A", "B"], ["A", "B"], tmp_path, num_per_condition=2, top_k=8,
                            progress=False, modality="xray", spacing=(0.2, 0.2))
    png = Image.open(tmp_path / records[0]["file"])
    assert png.mode == "L" and png.size == (SIDE, SIDE) and png.text["synthetic"] == "true"
    assert Image.open(tmp_path / "grid.png").mode == "L"
    assert np.asarray(Image.open(tmp_path / "grid.png")).shape == (2 * SIDE, 2 * SIDE)
    assert "format" not in records[0] and records[0]["spacing"] == [0.2, 0.2]
    assert records[0]["intensity"]["range"] == [0, 255] and records[0]["intensity"]["values"].startswith("uint8 PNG")
    grid = SampleGridHandler(var, tokenizer, ["A", "B"], ["A", "B"], samples_per_condition=3, top_k=8).grid("cpu")
    assert grid.shape == (2 * SIDE, 3 * SIDE, 3) and (grid[..., 0] == grid[..., 1]).all()
    views = torch.zeros(2, 1, 4, 4)
    assert sample_views(views) is views
    with pytest.raises(ValueError, match=r"images must be \(B, C, H, W\) or \(B, C, X, Y, Z\)"):
        sample_views(torch.zeros(2, 4, 4))
