"""check_sample_memorization on a trained odir_var run: the samples of sample.json checked against the run's own
training images; a training image's tokens fed back as a "sample" point at that image, reconstructions of held-out
images are not flagged."""

from __future__ import annotations

import json

import pytest
import torch

from medvq.api import load_generator
from medvq.generation import check_sample_memorization


def test_sample_json_writes_the_memorization_report(var_run, var_sample):
    folder = var_run / "generator" / "samples"
    report = json.loads((folder / "memorization.json").read_text())
    datalist = json.loads((var_run / "datalist.json").read_text())
    count = var_sample["samples_per_condition"] * len(var_sample["sample_conditions"])
    assert report["num_samples"] == count and report["num_train"] == len(datalist["training"])
    assert report["num_held_out"] == len(datalist["validation"])
    assert set(report["spaces"]) == {"pixel", "latent"}
    assert report["sample_names"][0] == "G/G_0000.png"
    assert (folder / "memorization_pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_training_image_fed_back_is_flagged_and_held_out_reconstructions_are_not(var_run, tmp_path):
    tokenizer = load_generator(var_run).tokenizer
    datalist = json.loads((var_run / "datalist.json").read_text())
    train = [item["image"] for item in datalist["training"][:3]]
    held_out = [item["image"] for item in datalist["validation"]]
    copies = tokenizer.preprocess(train)  # training images, exactly as the tokenizer saw them, passed off as samples
    reconstructions = tokenizer.reconstruct(held_out)  # what the tokenizer makes of images it never saw
    report = check_sample_memorization(tokenizer, torch.cat([copies, reconstructions]), var_run / "datalist.json",
                                       tmp_path, progress=False)
    for result in report.spaces.values():
        assert result.flagged[:3] == [True] * 3 and max(result.distances[:3]) < 1e-6
        assert result.nearest_name[:3] == train
    assert report.flagged[:3] == [True] * 3 and not any(report.flagged[3:])
    assert report.fraction_flagged == pytest.approx(3 / (3 + len(held_out)))
    saved = json.loads((tmp_path / "memorization.json").read_text())
    assert saved["flagged"] == report.flagged and (tmp_path / "memorization_pairs.png").is_file()
    # the generated samples' own tokens give the same images sample.json checked
    tokens = torch.tensor([json.loads(p.read_text())["tokens"] for p in sorted((var_run / "generator" / "samples" /
                                                                                  "G").glob("*.json"))])
    again = check_sample_memorization(tokenizer, tokens, var_run / "datalist.json", progress=False)
    assert again.num_samples == len(tokens) and not again.files
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_sample_memorization(tokenizer, tokens, tmp_path / "nope.json")
