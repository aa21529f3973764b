"""The imagenet100_vq and imagenet100_var bundles on a small ImageNet-shaped tree of JPEGs (all 100 classes, both val
layouts), with the quickstart overlay, in-process through monai.bundle.ConfigWorkflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from medvq.data import IMAGENET100_WNIDS, make_imagenet100_tree

ROOT = Path(__file__).resolve().parents[2]
VQ, VAR = ROOT / "bundles" / "imagenet100_vq" / "configs", ROOT / "bundles" / "imagenet100_var" / "configs"
QUICKSTART = str(ROOT / "configs" / "quickstart.json")
FAST = {"num_workers": 0, "checkpoint_every": 1000, "discriminator_start": 1000}


def _run(configs, meta: Path, workflow_type, run_id, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=[str(c) for c in configs], meta_file=str(meta / "metadata.json"),
                              logging_file=False, workflow_type=workflow_type, run_id=run_id, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_imagenet100_tree(tmp_path_factory.mktemp("imagenet") / "flat", val_layout="flat")


def test_imagenet100_vq_quickstart_trains_on_vars_crops_and_infers(tree, tmp_path):
    run = tmp_path / "run"
    workflow = _run([VQ / "train.json", QUICKSTART], VQ, "train", "training", dataset_dir=str(tree),
                    output_dir=str(run), num_epochs=2, quantize_start=1, **FAST)
    assert workflow.parser.get_parsed_content("network").quantizer.active
    info = json.loads((run / "run_info.json").read_text())
    assert info["preprocessing"]["modality"] == "natural" and info["data_format"] == "imagenet100"
    assert info["class_names"] == list(IMAGENET100_WNIDS) and info["channels"] == 3
    datalist = json.loads((run / "datalist.json").read_text())
    assert (datalist["numTraining"], datalist["numValidation"]) == (200, 100)  # the tree's own split
    out = tmp_path / "tokens"
    _run([VQ / "inference.json", QUICKSTART], VQ, "infer", "inference", output_dir=str(run),
         input_datalist=str(run / "datalist.json"), inference_output_dir=str(out), num_workers=0)
    summary = json.loads((out / "tokens.json").read_text())
    assert summary["num_images"] == 100 and summary["run"]["modality"] == "natural"
    recon = Image.open(out / summary["items"][0]["recon"])
    assert recon.mode == "RGB" and recon.size == (64, 64)


def test_imagenet100_var_stages_and_class_conditional_samples(tree, tmp_path):
    run = tmp_path / "run"
    common = {"dataset_dir": str(tree), "output_dir": str(run)}
    _run([VAR / "train_tokenizer.json", QUICKSTART], VAR, None, "training", num_epochs=1, quantize_start=None,
         image_size=32, scales=[1, 2, 4, 8], **common, **FAST)
    workflow = _run([VAR / "train_tokenizer.json", VAR / "train.json", QUICKSTART], VAR, None, "training",
                    generator_epochs=1, image_size=32, scales=[1, 2, 4, 8], **common)
    assert workflow.parser.get_parsed_content("generator").num_conditions == 100
    wanted = [IMAGENET100_WNIDS[0], IMAGENET100_WNIDS[99]]
    _run([VAR / "train_tokenizer.json", VAR / "train.json", QUICKSTART, VAR / "sample.json"], VAR, None, "sample",
         image_size=32, scales=[1, 2, 4, 8], sample_conditions=wanted, samples_per_condition=1, **common)
    samples = run / "generator" / "samples"
    assert sorted(p.name for p in samples.iterdir() if p.is_dir() and p.name != "tensorboard") == sorted(wanted)
    image = Image.open(next((samples / wanted[0]).glob("*.png")))
    assert image.size == (32, 32) and image.mode == "RGB"
