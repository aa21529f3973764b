"""The ``medvq`` command on real files: fundus photographs (scikit-image's retina), pydicom's MR DICOM slices and
nibabel's MR volume through tokenizers trained here by the bundles; every verb's ``--help``; ``python -m medvq``;
outputs equal the bundles' own inference; finished outputs never overwritten."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import pytest
import skimage.data
import torch
from conftest import ROOT, run_bundle
from PIL import Image

from medvq.api import load_tokenizer
from medvq.cli import build_parser, main
from medvq.data import make_example_dataset

VQ = ROOT / "bundles" / "odir_vq" / "configs"
IMAGE_VQ = ROOT / "bundles" / "image_vq" / "configs"
QUICKSTART, QUICKSTART_3D = ROOT / "configs" / "quickstart.json", ROOT / "configs" / "quickstart_3d.json"
FAST = {"num_workers": 0, "checkpoint_every": 1000, "discriminator_start": 1000, "num_epochs": 2, "quantize_start": 1}
VERBS = ("tokenize", "reconstruct", "sample", "report", "export", "info", "knobs")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.retina()).resize((300, 300)).save(folder / "retina.jpg")
    Image.fromarray(np.ascontiguousarray(skimage.data.retina()[::-1])).resize((240, 240)).save(folder / "flipped.png")
    return folder


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("examples")
    return {dims: Path(make_example_dataset(base / f"{dims}d", spatial_dims=dims, num_variants=2)["output_dir"])
            for dims in (2, 3)}


def _assert_same_up_to_rounding(mine, theirs, where: str = "") -> None:
    """Equal JSON trees, floats compared to a relative 1e-6 (everything else exactly)."""
    if isinstance(mine, float) or isinstance(theirs, float):
        assert mine == pytest.approx(theirs, rel=1e-6, abs=1e-9), where
    elif isinstance(mine, dict):
        assert isinstance(theirs, dict) and mine.keys() == theirs.keys(), where
        for key in mine:
            _assert_same_up_to_rounding(mine[key], theirs[key], f"{where}/{key}")
    elif isinstance(mine, list):
        assert isinstance(theirs, list) and len(mine) == len(theirs), where
        for i, (a, b) in enumerate(zip(mine, theirs)):
            _assert_same_up_to_rounding(a, b, f"{where}[{i}]")
    else:
        assert mine == theirs, where


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_python_m_medvq_answers_with_the_verbs():
    result = subprocess.run([sys.executable, "-m", "medvq"], check=False, capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 2
    for verb in VERBS:
        assert verb in result.stdout
    assert subprocess.run([sys.executable, "-m", "medvq", "--help"], check=False, capture_output=True,
                          timeout=120).returncode == 0


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_explains_itself(verb, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([verb, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: medvq {verb}") and len(text.splitlines()) > 4


def test_tokenize_and_reconstruct_equal_the_bundles_inference(vq_run, photos, tmp_path, capsys):
    bundle_out = tmp_path / "bundle"
    run_bundle([VQ / "inference.json", QUICKSTART], "inference", VQ / "metadata.json", output_dir=str(vq_run),
               input_dir=str(photos), inference_output_dir=str(bundle_out), num_workers=0)
    code, out, _ = _cli(capsys, "tokenize", photos, tmp_path / "tokens", "--model", vq_run, "--quiet")
    assert code == 0 and "wrote 2 token maps of 2 inputs" in out
    code, out, _ = _cli(capsys, "reconstruct", photos, tmp_path / "recon", "--model", vq_run, "--quiet")
    assert code == 0 and "reconstructions" in out
    expected = {Path(r["image"]).name: r for r in json.loads((bundle_out / "tokens.json").read_text())["items"]}
    for folder in ("tokens", "recon"):
        summary = json.loads((tmp_path / folder / "tokens.json").read_text())
        assert summary["num_images"] == 2 and summary["run"]["model"].endswith("model_final.pt")
        for item in summary["items"]:
            reference = expected[Path(item["image"]).name]
            assert np.array_equal(np.load(tmp_path / folder / item["tokens"]), np.load(bundle_out / reference["tokens"]))
            assert item["psnr"] == pytest.approx(reference["psnr"], abs=1e-6)
            if folder == "tokens":
                assert item["recon"] is None and not list((tmp_path / folder).glob("*_recon.png"))
            else:
                assert np.array_equal(np.asarray(Image.open(tmp_path / folder / item["recon"])),
                                      np.asarray(Image.open(bundle_out / reference["recon"])))
        with open(tmp_path / folder / "index.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [Path(r["image"]).name for r in rows] == [Path(i["image"]).name for i in summary["items"]]
    # the round trip: token files decode to the reconstructions written (up to PNG rounding)
    tokenizer = load_tokenizer(vq_run)
    item = json.loads((tmp_path / "recon" / "tokens.json").read_text())["items"][0]
    decoded = tokenizer.decode(torch.from_numpy(np.load(tmp_path / "recon" / item["tokens"]))[None])[0]
    written = np.asarray(Image.open(tmp_path / "recon" / item["recon"]), dtype=np.float32)
    np.testing.assert_allclose((decoded.permute(1, 2, 0).numpy() + 1) * 127.5, written, atol=0.51)


def test_finished_outputs_are_never_overwritten_and_bad_inputs_are_named(vq_run, photos, tmp_path, capsys):
    out = tmp_path / "tokens"
    assert _cli(capsys, "tokenize", photos, out, "--model", vq_run, "--quiet")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = _cli(capsys, "tokenize", photos, out, "--model", vq_run, "--quiet")
    assert code == 2 and "already holds finished results" in err and str(out) in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, _, err = _cli(capsys, "tokenize", tmp_path / "nowhere", tmp_path / "new", "--model", vq_run)
    assert code == 2 and "nowhere" in err and "does not exist" in err
    code, _, err = _cli(capsys, "tokenize", photos, tmp_path / "new", "--model", tmp_path / "no_model")
    assert code == 2 and "no_model" in err
    with pytest.raises(SystemExit):
        main(["tokenize", str(photos), str(tmp_path / "new"), "--model", str(vq_run), "--batch_size", "0"])
    assert not (tmp_path / "new").exists()  # nothing created for a refused command


def test_reconstruct_ct_dicom_and_a_nifti_volume_on_its_source_grid(examples, tmp_path, capsys):
    run2d, run3d = tmp_path / "run2d", tmp_path / "run3d"
    run_bundle([IMAGE_VQ / "train.json", QUICKSTART], "training", IMAGE_VQ / "metadata.json",
               dataset_dir=str(examples[2] / "ct"), modality="ct", group_by="file", output_dir=str(run2d),
               batch_size=2, val_fraction=0.3, **FAST)
    dicoms = tmp_path / "dicoms"
    dicoms.mkdir()
    ct_small = Path(pydicom.data.get_testdata_file("CT_small.dcm"))  # a real CT slice that ships with pydicom
    shutil.copy(ct_small, dicoms / "CT_small.dcm")
    code, _, err = _cli(capsys, "reconstruct", dicoms, tmp_path / "out2d", "--model", run2d, "--quiet")
    assert code == 0, err
    (item,) = json.loads((tmp_path / "out2d" / "tokens.json").read_text())["items"]
    assert Path(item["image"]).name == "CT_small.dcm"
    assert Image.open(tmp_path / "out2d" / item["recon"]).mode == "L"
    tokens = np.load(tmp_path / "out2d" / item["tokens"])
    assert tokens.shape == (16, 16) and np.array_equal(tokens, load_tokenizer(run2d).encode(ct_small)[0].numpy())

    run_bundle([IMAGE_VQ / "train.json", QUICKSTART_3D], "training", IMAGE_VQ / "metadata.json",
               dataset_dir=str(examples[3] / "mr"), modality="mr", group_by="file", output_dir=str(run3d), **FAST)
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    anatomical = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"  # nibabel's real T1 volume
    shutil.copy(anatomical, volumes / "anatomical.nii")
    code, _, err = _cli(capsys, "reconstruct", volumes, tmp_path / "out3d", "--model", run3d, "--quiet")
    assert code == 0, err
    (item,) = json.loads((tmp_path / "out3d" / "tokens.json").read_text())["items"]
    recon, source = nib.load(tmp_path / "out3d" / item["recon"]), nib.load(anatomical)
    assert item["space"] == "source" and recon.shape == source.shape
    np.testing.assert_allclose(recon.affine, source.affine, atol=1e-4)
    data = np.asarray(source.dataobj, dtype=np.float32)
    values = np.asarray(recon.dataobj)
    assert values.max() > 1.5 and values.max() <= np.percentile(data, 99.5) + 1e-3  # MR units, not [-1, 1]


def test_knobs_lists_every_setting_of_every_bundle_with_its_meaning(capsys):
    for bundle in sorted((ROOT / "bundles").iterdir()):
        code, out, _ = _cli(capsys, "knobs", bundle, "--json")
        assert code == 0
        knobs = json.loads(out)
        names = {k["name"] for k in knobs}
        assert {"num_epochs", "quantize_start", "output_dir", "seed"} <= names, bundle.name
        undocumented = [k["name"] for k in knobs if not k["description"]]
        assert not undocumented, (bundle.name, undocumented)
    code, out, _ = _cli(capsys, "knobs", ROOT / "bundles" / "odir_var")
    assert code == 0 and "--generator_preset \"var_d16\"" in out and "--quantize_start 50" in out
    code, out, _ = _cli(capsys, "knobs", ROOT / "bundles" / "odir_var", "--config", "sample.json", "--markdown")
    assert code == 0 and out.startswith("| knob | default | meaning |") and "`guidance`" in out
    code, _, err = _cli(capsys, "knobs", ROOT / "bundles" / "odir_vq", "--config", "nope.json")
    assert code == 2 and "nope.json" in err and "train.json" in err


def test_sample_writes_what_sample_json_writes(var_run, var_sample, tmp_path, capsys):
    out = tmp_path / "samples"
    conditions = ",".join(var_sample["sample_conditions"])
    code, text, _ = _cli(capsys, "sample", out, "--model", var_run, "--conditions", conditions, "-n",
                         var_sample["samples_per_condition"], "--batch_size", var_sample["sample_batch_size"],
                         "--seed", var_sample["sample_seed"], "--quiet")
    assert code == 0 and "wrote 6 synthetic images for 2 conditions" in text
    assert "memorization check: " in text and "of 6 samples are near-copies" in text
    memorization = json.loads((out / "memorization.json").read_text())
    assert memorization["num_samples"] == 6 and set(memorization["spaces"]) == {"pixel", "latent"}
    # the same check as sample.json's: equal keys, counts and files; distances equal up to float rounding (the two
    # computations may run with other thread counts, which moves a distance by ~1e-8)
    _assert_same_up_to_rounding(memorization, {
        **json.loads((var_run / "generator" / "samples" / "memorization.json").read_text()), "files": memorization["files"]})
    assert (out / "memorization_pairs.png").is_file()
    bundle = var_run / "generator" / "samples"
    for name in var_sample["sample_conditions"]:
        for i in range(var_sample["samples_per_condition"]):
            mine = json.loads((out / name / f"{name}_{i:04d}.json").read_text())
            theirs = json.loads((bundle / name / f"{name}_{i:04d}.json").read_text())
            assert mine["tokens"] == theirs["tokens"] and mine["checkpoints"] == theirs["checkpoints"]
            assert mine["training_data"]["datalist"]["sha256"] == theirs["training_data"]["datalist"]["sha256"]
            assert (out / name / f"{name}_{i:04d}.png").read_bytes() == (bundle / name / f"{name}_{i:04d}.png").read_bytes()
    code, _, err = _cli(capsys, "sample", out, "--model", var_run, "--quiet")
    assert code == 2 and "already holds finished results" in err
    code, text, _ = _cli(capsys, "sample", tmp_path / "fast", "--model", var_run, "-n", 1, "--conditions", "null",
                         "--no_memorization_check", "--quiet")
    assert code == 0 and "memorization check skipped" in text and not (tmp_path / "fast" / "memorization.json").exists()
    code, _, err = _cli(capsys, "sample", tmp_path / "other", "--model", var_run, "--conditions", "X", "--quiet")
    assert code == 2 and "'X'" in err


def test_info_describes_runs_stages_and_checkpoints(vq_run, var_run, tmp_path, capsys):
    code, out, _ = _cli(capsys, "info", vq_run, "--json")
    assert code == 0
    info = json.loads(out)
    recorded = json.loads((vq_run / "run_info.json").read_text())
    assert info["network_preset"] == "vqgan_tiny" and info["num_embeddings"] == recorded["num_embeddings"]
    assert info["switch"]["iteration"] == recorded["switch"]["iteration"]
    assert info["weights"]["quantizer_active"] is True and len(info["weights"]["sha256"]) == 64
    assert 0 < info["at_the_end"]["usage"] <= 1 and info["at_the_end"]["perplexity"] >= 1
    assert info["model_card"].endswith("MODEL_CARD.md")
    code, out, _ = _cli(capsys, "info", var_run)
    assert code == 0 and out.startswith("tokenizer:") and "\ngenerator:" in out and "token_acc" in out
    code, out, _ = _cli(capsys, "info", vq_run / "checkpoints" / "model_final.pt", "--json")
    assert code == 0 and json.loads(out)["network_preset"] == "vqgan_tiny"
    code, _, err = _cli(capsys, "info", tmp_path)
    assert code == 2 and "holds no medvq run" in err


def test_export_checks_identical_indices_and_never_overwrites(vq_run, tmp_path, capsys):
    target = tmp_path / "tokenizer.ts"
    code, out, _ = _cli(capsys, "export", vq_run, "--output", target)
    assert code == 0 and "identical token indices to eager" in out and "0 mismatches" in out
    module = torch.jit.load(str(target))
    tokenizer = load_tokenizer(vq_run)
    images = tokenizer.preprocess([item["image"] for item in
                                   json.loads((vq_run / "datalist.json").read_text())["validation"]])
    assert torch.equal(module(images)[:, 0], tokenizer.encode(images))
    before = target.read_bytes()
    code, _, err = _cli(capsys, "export", vq_run, "--output", target)
    assert code == 2 and "never replaced" in err and target.read_bytes() == before


def test_report_compares_evaluated_runs(vq_run, tmp_path, capsys):
    run = tmp_path / "deferred"
    shutil.copytree(vq_run, run)
    run_bundle([VQ / "train.json", QUICKSTART, VQ / "evaluate.json"], "evaluate", VQ / "metadata.json",
               output_dir=str(run), num_workers=0)
    code, out, err = _cli(capsys, "report", run, "--output", tmp_path / "comparison")
    assert code == 0 and "deferred" in out and (tmp_path / "comparison" / "compare.md").is_file()
    code, _, err = _cli(capsys, "report", vq_run, "--output", tmp_path / "none")
    assert code == 2 and "metrics.json" in err
