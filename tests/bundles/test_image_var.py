"""The image_var bundle on real medical images: multi-scale tokenizer, class-conditional VAR generator, samples.

In-process through monai.bundle.ConfigWorkflow, on the files medvq.data.examples lays out from pydicom's, nibabel's
and matplotlib's test images (class folders ct/ and mr/). 3D: stage 1 on the volumes, stage 2 conditioned on the
class of each volume, then samples written as NIfTI with the training data's voxel spacing, marked synthetic.
2D: the datalist route, its integer labels named by the datalist's own "labels".
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigWorkflow

from medvq.data import make_example_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bundles" / "image_var" / "configs"
STAGE1, STAGE2, SAMPLE = (str(CONFIGS / n) for n in ("train_tokenizer.json", "train.json", "sample.json"))
QUICKSTART, QUICKSTART_3D = str(ROOT / "configs" / "quickstart.json"), str(ROOT / "configs" / "quickstart_3d.json")
FAST = {"num_workers": 0, "checkpoint_every": 1000, "discriminator_start": 1000}


def _run(configs, run_id, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                              workflow_type=None, run_id=run_id, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def test_3d_tokenizer_generator_and_nifti_samples_per_class(tmp_path):
    data = Path(make_example_dataset(tmp_path / "volumes", spatial_dims=3, num_variants=4)["output_dir"])
    run = tmp_path / "run"
    common = {"dataset_dir": str(data), "modality": "mr", "group_by": "file", "output_dir": str(run)}
    _run([STAGE1, QUICKSTART_3D], "training", num_epochs=2, quantize_start=1, **common, **FAST)
    tokenizer = json.loads((run / "tokenizer" / "run_info.json").read_text())
    spacing = tokenizer["spacing"]
    assert tokenizer["preprocessing"]["spatial_dims"] == 3 and tokenizer["class_names"] == ["ct", "mr"]

    workflow = _run([STAGE1, STAGE2, QUICKSTART_3D], "training", generator_epochs=1, **common)
    generator = workflow.parser.get_parsed_content("generator")
    assert generator.num_conditions == 2  # one condition per class folder
    assert json.loads((run / "generator" / "run_info.json").read_text())["condition_names"] == ["ct", "mr"]

    # sampling reads the classes, the spacing and the intensity mapping back from the run (no --modality needed)
    _run([STAGE1, STAGE2, QUICKSTART_3D, SAMPLE], "sample", output_dir=str(run), samples_per_condition=2)
    samples = run / "generator" / "samples"
    records = json.loads((samples / "samples.json").read_text())
    assert records["format"] == "nifti" and records["synthetic"] is True
    records = records["records"]
    assert sorted({r["condition"]["name"] for r in records}) == ["ct", "mr"] and len(records) == 4
    for condition in ("ct", "mr"):
        files = sorted((samples / condition).glob("*.nii.gz"))
        assert len(files) == 2
        volume = nib.load(files[0])
        assert volume.shape == (32, 32, 32)
        np.testing.assert_allclose(np.diag(volume.affine)[:3], spacing, rtol=1e-5)  # the training data's spacing
        assert b"synthetic" in volume.header["descrip"].tobytes()
        sidecar = json.loads(files[0].with_name(files[0].name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["format"] == "nifti" and sidecar["condition"]["name"] == condition
    assert (samples / "grid.png").is_file()


def test_2d_datalist_labels_are_named_by_the_datalists_labels(tmp_path):
    data = Path(make_example_dataset(tmp_path / "images", spatial_dims=2, num_variants=8)["output_dir"])
    run = tmp_path / "run"
    _run([STAGE1, QUICKSTART], "training", datalist=str(data / "examples_datalist.json"), modality="mr",
         group_by="patient_id", output_dir=str(run), num_epochs=1, quantize_start=None, image_size=32,
         scales=[1, 2, 4, 8], **FAST)
    datalist = json.loads((run / "datalist.json").read_text())
    assert datalist["labels"] == {"0": "ct", "1": "mr"} and datalist["channels"] == 1
    patients = [{item["patient_id"] for item in datalist[key]} for key in ("training", "validation")]
    assert patients[0] and patients[1] and not patients[0] & patients[1]  # a source and its variants on one side
