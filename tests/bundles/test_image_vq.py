"""The image_vq bundle on real medical images, in-process through monai.bundle.ConfigWorkflow.

The images are files that ship with pydicom, nibabel and matplotlib, laid out by medvq.data.examples (CT and MR
DICOMs and NIfTI volumes, with seeded augmented variants). 2D: MR slices and DICOMs, trained, then tokenized by
inference.json into grayscale PNGs named after their slice. 3D: MR volumes (NIfTI files and a DICOM series folder),
trained, evaluated, and reconstructed by inference.json as NIfTI on each source's own grid (affine) in its units.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from medvq.data import make_example_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundles" / "image_vq" / "configs"
TRAIN, INFERENCE, EVALUATE = (str(CONFIGS / n) for n in ("train.json", "inference.json", "evaluate.json"))
QUICKSTART, QUICKSTART_3D = str(ROOT / "configs" / "quickstart.json"), str(ROOT / "configs" / "quickstart_3d.json")
FAST = {"num_workers": 0, "checkpoint_every": 1000, "discriminator_start": 1000}


def _workflow(configs, workflow_type, run_id, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                              workflow_type=workflow_type, run_id=run_id, **overrides)
    workflow.initialize()
    return workflow


def _run(configs, workflow_type, run_id, **overrides) -> ConfigWorkflow:
    workflow = _workflow(configs, workflow_type, run_id, **overrides)
    workflow.run()
    workflow.finalize()
    return workflow


def _chain(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("examples")
    return {dims: Path(make_example_dataset(base / f"{dims}d", spatial_dims=dims, num_variants=6)["output_dir"])
            for dims in (2, 3)}


# ------------------------------------------------------------------------------------------------------------- 2D
def test_2d_mr_slices_train_and_inference_writes_grayscale_pngs_named_by_slice(examples, tmp_path):
    mr = examples[2] / "mr"  # DICOM slices and the slices of the NIfTI volumes, kept apart from CT (one modality)
    run = tmp_path / "run"
    workflow = _workflow([TRAIN, QUICKSTART], "train", "training", dataset_dir=str(mr), modality="mr",
                         group_by="file", output_dir=str(run), num_epochs=2, quantize_start=1, batch_size=4, **FAST)
    assert workflow.check_properties() in (None, [])
    workflow.run()
    network = workflow.parser.get_parsed_content("network")
    workflow.finalize()
    # the network follows the data: grayscale in, grayscale out
    assert network.in_channels == 1 and network.quantizer.active
    info = json.loads((run / "run_info.json").read_text())
    assert info["channels"] == 1 and info["data_format"] == "images"
    assert info["preprocessing"]["modality"] == "mr" and info["preprocessing"]["intensity"]["method"] == "percentiles"
    assert info["spacing"] is None  # 2D: no voxel spacing for samples
    datalist = json.loads((run / "datalist.json").read_text())
    assert datalist["channels"] == 1 and datalist["numTraining"] > 0 and datalist["numValidation"] > 0
    slices = [item for item in datalist["validation"] if item.get("slice_index") is not None]

    # inference on the run's validation split: modality, channels and sizes come from run_info.json
    out = tmp_path / "tokens"
    _run([INFERENCE, QUICKSTART], "infer", "inference", output_dir=str(run), input_datalist=str(run / "datalist.json"),
         inference_output_dir=str(out), num_workers=0)
    summary = json.loads((out / "tokens.json").read_text())
    assert summary["run"]["modality"] == "mr" and summary["num_images"] == datalist["numValidation"]
    for item in summary["items"]:
        png = Image.open(out / item["recon"])
        assert png.mode == "L" and png.size == (64, 64)
        assert np.load(out / item["tokens"]).shape == (16, 16)
    named = [item for item in summary["items"] if "slice_index" in item]
    assert len(named) == len(slices)  # every slice says which one it is, in its name and its record
    for item in named:
        assert item["recon"].endswith(f"_{'xyz'[item['slice_axis']]}{item['slice_index']:03d}_recon.png")
    with open(out / "index.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == summary["num_images"]


# ------------------------------------------------------------------------------------------------------------- 3D
@pytest.fixture(scope="module")
def trained_3d(examples, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run3d")
    _run([TRAIN, QUICKSTART_3D], "train", "training", dataset_dir=str(examples[3] / "mr"), modality="mr",
         group_by="file", output_dir=str(run), num_epochs=2, quantize_start=1, **FAST)
    return run


def test_3d_training_records_the_volumes_and_evaluates(trained_3d):
    info = json.loads((trained_3d / "run_info.json").read_text())
    assert info["preprocessing"]["spatial_dims"] == 3 and info["preprocessing"]["roi_size"] == [32, 32, 32]
    assert info["channels"] == 1 and info["spacing"] is not None and len(info["spacing"]) == 3
    state = torch.load(trained_3d / "checkpoints" / "model_final.pt", weights_only=True)
    assert state["quantizer.weight"].shape == (256, 8) and bool(state["quantizer.active_flag"])
    assert state["encoder.blocks.0.conv.weight"].ndim == 5  # 3D convolutions, one input channel
    assert state["encoder.blocks.0.conv.weight"].shape[1] == 1
    assert (trained_3d / "images" / "recon_grid_last.png").is_file()
    # the evaluate overlay needs no --modality: it reads the run's preprocessing
    _run([TRAIN, QUICKSTART_3D, EVALUATE], "infer", "evaluate", output_dir=str(trained_3d))
    report = json.loads((trained_3d / "eval" / "metrics.json").read_text())
    assert report["num_images"] > 0 and 0 < report["metrics"]["usage"] <= 1 and report["quantizer_active"]


def test_3d_inference_writes_nifti_on_each_source_grid_in_source_units(examples, trained_3d, tmp_path):
    source_dir = tmp_path / "inputs"
    shutil.copytree(examples[3] / "mr", source_dir)
    out = tmp_path / "recon"
    _run([INFERENCE, QUICKSTART_3D], "infer", "inference", output_dir=str(trained_3d), input_dir=str(source_dir),
         inference_output_dir=str(out), num_workers=0)
    summary = json.loads((out / "tokens.json").read_text())
    assert summary["run"]["spatial_dims"] == 3 and summary["num_images"] == 9
    series = 0
    for item in summary["items"]:
        recon = nib.load(out / item["recon"])
        assert item["format"] == "nifti" and item["space"] == "source"
        assert np.load(out / item["tokens"]).shape == (8, 8, 8)
        source = Path(item["image"])
        if source.is_dir():  # the DICOM series folder: its grid is the series' (MONAI reads it as one volume)
            series += 1
            assert recon.shape == (41, 33, 25)
            continue
        image = nib.load(source)
        assert recon.shape == image.shape
        np.testing.assert_allclose(recon.affine, image.affine, atol=1e-4)
        values, reference = np.asarray(recon.dataobj), np.asarray(image.dataobj)
        assert values.min() >= reference.min() - 1e-3 and values.max() <= reference.max() + 1e-3  # MR units
    assert series == 1


# ------------------------------------------------------------------------------------------------------- bad input
def test_a_missing_modality_and_a_folder_without_images_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(Exception) as info:
        _workflow([TRAIN, QUICKSTART], "train", "training", dataset_dir=str(empty), output_dir=str(tmp_path / "a"))
    assert any("--modality '' is not a modality" in str(e) for e in _chain(info.value)), _chain(info.value)
    with pytest.raises(Exception) as info:
        _workflow([TRAIN, QUICKSTART], "train", "training", dataset_dir=str(empty), modality="ct",
                  output_dir=str(tmp_path / "b"))
    missing = [e for e in _chain(info.value) if isinstance(e, FileNotFoundError)]
    assert missing and str(empty) in str(missing[0]) and ".dcm" in str(missing[0])
    with pytest.raises(Exception) as info:
        _workflow([TRAIN, QUICKSTART], "train", "training", modality="ct", output_dir=str(tmp_path / "c"))
    assert any("no images given: pass --dataset_dir" in str(e) for e in _chain(info.value))
