"""MODEL_CARD.md: written by real one-epoch quickstart trainings (odir_vq; odir_var's two stages), every number equal
to what the run recorded, kept as it is when a finished run is resumed, never at the cost of the weights."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

import medvq.api
from medvq.handlers import CheckpointHandler
from medvq.report import model_card, write_run_info
from medvq.report.__main__ import main
from medvq.report.model_card import CARD_NAME, INTENDED_USE

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.json")
ODIR_VQ = ROOT / "bundles" / "odir_vq" / "configs"
ODIR_VAR = ROOT / "bundles" / "odir_var" / "configs"
# one epoch of 2 iterations (20 training images, batch 8) that switches to quantization after its first iteration
FAST = {"synthetic_images": 24, "num_epochs": 1, "quantize_start": 1, "quantize_start_unit": "iterations",
        "checkpoint_every": 1000, "discriminator_start": 1000, "num_workers": 0}
TINY_VAR = {"image_size": 32, "scales": [1, 2, 4, 8], "num_embeddings": 32, "embedding_dim": 4, "synthetic_images": 24,
            "synthetic_size": 48, "num_workers": 0, "batch_size": 4, "checkpoint_every": 100, "discriminator_start": 1000}


def _workflow(configs, meta_dir: Path, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=[str(c) for c in configs], meta_file=str(meta_dir / "metadata.json"),
                              logging_file=False, workflow_type=None, run_id="training", **overrides)
    workflow.initialize()
    return workflow


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cell(card: str, metric: str) -> list[str]:
    """The value cells of a metric's row in the card's results tables."""
    match = re.search(rf"^\| {metric}: [^|]* \|(.*)\|$", card, re.MULTILINE)
    assert match, f"no row for {metric}"
    return [c.strip() for c in match.group(1).split("|")]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    """A one-epoch odir_vq quickstart run, published to a bundle folder; its card as written at completion."""
    base = tmp_path_factory.mktemp("card")
    run, bundle = base / "run", base / "bundle"
    workflow = _workflow([ODIR_VQ / "train.json", QUICKSTART], ODIR_VQ, output_dir=str(run), bundle_root=str(bundle),
                         publish_model=True, **FAST)
    workflow.run()
    metrics = dict(workflow.parser.get_parsed_content("validate#evaluator").state.metrics)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    facts = {"switch": dict(trainer.state.deferred_switch), "iteration": trainer.state.iteration}
    workflow.finalize()
    return run, bundle, metrics, facts, (run / CARD_NAME).read_text()


def test_the_card_states_what_the_run_recorded(tokenizer_run):
    run, bundle, metrics, facts, card = tokenizer_run
    datalist = json.loads((run / "datalist.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    # data: the datalist's counts and sha256, generated data marked as such, nothing skipped
    assert f"{len(datalist['training'])} training, {len(datalist['validation'])} validation" in card
    assert f"datalist sha256: `{_sha256(run / 'datalist.json')}`" in card
    assert "generated data, not medical images" in card and "quickstart / generated-data run" in card
    assert "skipped: none" in card
    # model: the preset, the codebook and the weights' sha256
    assert "`vqgan_tiny`, 256 codes of dimension 8" in card
    assert _sha256(run / "checkpoints" / "model_final.pt") in card
    # training: the switch the run recorded (run_info.json and the trainer's state agree)
    switch = info["switch"]
    assert switch["iteration"] == facts["switch"]["iteration"] == 1
    assert f"switch: at iteration {switch['iteration']} (epoch {switch['epoch']})" in card
    assert f"from {switch['num_samples']} encoder latents (k-means inertia {switch['inertia']:.4g}" in card
    assert f"{facts['iteration']} iterations" in card
    # results: the evaluator's final metrics, as the card rounds them (4 significant digits)
    for name in ("usage", "perplexity", "code_distance", "code_distance_used", "shrinkage", "psnr", "ssim"):
        assert float(_cell(card, name)[0]) == pytest.approx(metrics[f"val_{name}"], rel=1e-3), name
    assert _cell(card, "dead_codes") == [str(metrics["val_dead_codes"])]
    assert _cell(card, "lpips") == ["not measured"] and _cell(card, "r_fid") == ["not measured"]
    # intended use (at the top and in its section), limits, and the published copy beside models/model.pt
    assert card.count(INTENDED_USE) == 2 and "no clinical validation" in card
    assert (bundle / "models" / "model_card.md").read_text() == card
    assert not (bundle / "docs").exists()  # a bundle's docs/README.md is its own card: never written
    # the zoo's pre-commit format (tests/bundles/test_model_zoo.py): one final newline, no trailing whitespace
    assert card.endswith("```\n") and all(line == line.rstrip() for line in card.splitlines()) and card.isascii()


def test_the_cards_loading_snippet_runs(tokenizer_run):
    run, _, _, _, card = tokenizer_run
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102  the card's own text, run verbatim
    assert scope["tokenizer"].checkpoint == run / "checkpoints" / "model_final.pt"
    published = card.split("# or the published copy: ", 1)[1].split("\n", 1)[0]
    exec(f"published = {published}", scope)  # noqa: S102  the card's own text
    assert scope["published"].checkpoint.name == "model.pt"


def test_a_finished_run_resumed_keeps_its_card(tokenizer_run):
    run, _, _, _, card = tokenizer_run
    before = (run / CARD_NAME).stat().st_mtime_ns
    workflow = _workflow([ODIR_VQ / "train.json", QUICKSTART], ODIR_VQ, output_dir=str(run), resume_from="latest",
                         bundle_root=str(run.parent / "other_bundle"), **FAST)
    workflow.run()
    assert workflow.parser.get_parsed_content("train#trainer").state.run_finished
    workflow.finalize()
    assert (run / CARD_NAME).read_text() == card and (run / CARD_NAME).stat().st_mtime_ns == before


def test_the_card_after_an_evaluation_adds_its_numbers(tokenizer_run, capsys):
    run, _, _, _, _ = tokenizer_run
    evaluation = ConfigWorkflow(
        config_file=[str(ODIR_VQ / "train.json"), QUICKSTART, str(ODIR_VQ / "evaluate.json")],
        meta_file=str(ODIR_VQ / "metadata.json"), logging_file=False, workflow_type=None, run_id="evaluate",
        output_dir=str(run), synthetic_images=24, num_workers=0)
    evaluation.initialize()
    evaluation.run()
    evaluation.finalize()
    assert main(["card", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / CARD_NAME)
    card = (run / CARD_NAME).read_text()
    report = json.loads((run / "eval" / "metrics.json").read_text())
    assert float(_cell(card, "psnr")[1]) == pytest.approx(report["metrics"]["psnr"], rel=1e-3)
    assert _cell(card, "dead_codes")[1] == str(report["metrics"]["dead_codes"])
    assert _cell(card, "r_fid")[1].startswith("not measured (not computed")
    assert "are these weights." in card and "Not evaluated yet" not in card
    # training facts read back from the newest checkpoint when no engine is at hand
    assert "1 epoch(s) (max_epochs 1), 2 iterations (2 per epoch)" in card


def test_generator_and_tokenizer_cards_of_an_odir_var_run(tmp_path):
    out = tmp_path / "var"
    stage1 = _workflow([ODIR_VAR / "train_tokenizer.json", QUICKSTART], ODIR_VAR, output_dir=str(out),
                       num_epochs=1, quantize_start=2, quantize_start_unit="iterations", quantize_num_samples=512,
                       **TINY_VAR)
    stage1.run()
    stage1.finalize()
    stage2 = _workflow([ODIR_VAR / "train_tokenizer.json", ODIR_VAR / "train.json", QUICKSTART], ODIR_VAR,
                       output_dir=str(out), generator_epochs=1, generator_batch_size=4, sample_interval=1,
                       generator_warmup_iterations=2, **TINY_VAR)
    stage2.run()
    accuracy = dict(stage2.parser.get_parsed_content("train#trainer").state.metrics)
    stage2.finalize()
    tokenizer_card = (out / "tokenizer" / CARD_NAME).read_text()
    card = (out / "generator" / CARD_NAME).read_text()
    datalist = json.loads((out / "datalist.json").read_text())
    switch = json.loads((out / "tokenizer" / "run_info.json").read_text())["switch"]
    assert "multi-scale VQ tokenizer `msvqgan_tiny`" in tokenizer_card and "scales: `[1, 2, 4, 8]`" in tokenizer_card
    assert card.startswith("# Model card: VAR generator `var_tiny`") and INTENDED_USE in card
    # the data (one folder up, shared by both stages) and the tokenizer's schedule and switch
    assert f"{len(datalist['training'])} training, {len(datalist['validation'])} validation" in card
    assert "(`../datalist.json`)" in card and _sha256(out / "datalist.json") in card
    assert f"the tokenizer's switch: at iteration {switch['iteration']}" in card
    assert f"its card `{out / 'tokenizer' / CARD_NAME}`" in card
    assert _sha256(out / "generator" / "checkpoints" / "model_final.pt") in card
    # the generator's measured next-token accuracy, overall and per scale, equal to the trainer's
    for name in ("token_acc", "token_acc_s0", "token_acc_s3"):
        row = re.search(rf"^\| {name} \| ([^|]+) \|$", card, re.MULTILINE)
        assert row and float(row.group(1)) == pytest.approx(accuracy[name], rel=1e-3), name
    assert "not on held-out images" in card
    if hasattr(medvq.api, "load_generator"):
        assert f"load_generator({str(out / 'generator')!r})" in card


def test_a_card_that_cannot_be_written_costs_no_weights(tmp_path, caplog):
    run = tmp_path / "run"
    write_run_info(run, schedule="standard", quantize_start=None, network_preset="vqgan_tiny")
    (run / CARD_NAME).mkdir()  # the card's place is taken: its write fails
    handler = CheckpointHandler(run / "checkpoints", {"network": torch.nn.Linear(2, 2)}, every_iterations=1)
    with caplog.at_level(logging.WARNING, logger="medvq.handlers.checkpoint"):
        handler.write_final()
    assert (run / "checkpoints" / "model_final.pt").is_file()
    assert str(run / CARD_NAME) in caplog.text and "could not write the model card" in caplog.text
    assert not list(run.glob("*.tmp"))
    # the same folder's card, as text: what is missing is said, not invented
    text = model_card(run)
    assert "datalist: not found" in text and "No validation was recorded" in text
    assert "switch: not recorded" not in text  # standard: no switch to record
    with pytest.raises(FileNotFoundError, match="no run_info.json"):
        model_card(tmp_path / "nowhere")
