"""The odir_vq bundle's training, run in-process through monai.bundle.ConfigWorkflow (plus one real torchrun run).

All runs use the quickstart overlay (tiny network, generated fundus images) with one-epoch-scale overrides.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "odir_vq"
TRAIN = str(BUNDLE / "configs" / "train.json")
QUICKSTART = str(ROOT / "configs" / "quickstart.json")
SCHEDULES = ROOT / "configs" / "schedules"
# MONAI's bundle metadata schema, a local copy (Apache-2.0, from MONAI-extra-test-data 0.8.1) so the check runs offline
SCHEMA = Path(__file__).with_name("meta_schema.json")


def _workflow(output_dir: Path, *overlays: str, **overrides) -> ConfigWorkflow:
    settings = {"output_dir": str(output_dir), "synthetic_images": 24, "num_epochs": 2, "discriminator_start": 3,
                "checkpoint_every": 2, "num_workers": 0}
    if not overlays:  # a schedule overlay decides quantize_start itself (overrides would win over it)
        settings["quantize_start"] = 1
    settings.update(overrides)
    workflow = ConfigWorkflow(
        config_file=[TRAIN, QUICKSTART, *overlays], meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"), workflow_type="train", run_id="training", **settings,
    )
    workflow.initialize()
    return workflow


def _scalars(event_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    acc.Reload()  # the folder's files together, as TensorBoard reads them
    for tag in acc.Tags()["scalars"]:
        values.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    for tag in acc.Tags()["images"] + acc.Tags()["histograms"]:
        values.setdefault(tag, []).append(1.0)
    return values


def test_metadata_is_valid_offline():
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_train_one_tiny_run_leaves_checkpoints_tensorboard_and_grids(tmp_path):
    workflow = _workflow(tmp_path)
    assert workflow.check_properties() in (None, [])
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    network = workflow.parser.get_parsed_content("network")
    workflow.finalize()
    # the deferred switch happened once, after epoch 1, and the checkpoint files exist
    assert network.quantizer.active and trainer.state.deferred_switch["epoch"] == 1
    assert (tmp_path / "checkpoints" / "model_final.pt").is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt"))
    state = torch.load(tmp_path / "checkpoints" / "model_final.pt", weights_only=True)
    assert state["quantizer._extra_state"] == {"active": True}
    # TensorBoard: every loss term, lr, coverage before and after the switch, PSNR/SSIM, images, histograms
    tags = _scalars(tmp_path / "tensorboard")
    for tag in ("loss", "rec_loss", "vq_loss", "g_adv_loss", "d_loss", "lr", "batch_perplexity",
                "val_usage", "val_perplexity", "val_code_distance", "val_dead_codes", "val_psnr", "val_ssim",
                "val_reconstructions", "val_code_index"):
        assert tag in tags, tag
    assert len(tags["val_usage"]) == 2  # one value per epoch: before and after the switch
    grid = tmp_path / "images" / "recon_grid_last.png"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "datalist.json").read_text())["training"]


def test_the_auto_schedule_overlay_reaches_the_switch_handler(tmp_path):
    """configs/schedules/auto.json on odir_vq: its auto_switch_* knobs drive the handler, and the switch it chose is
    recorded in run_info.json."""
    workflow = _workflow(tmp_path, str(SCHEDULES / "auto.json"), num_epochs=4, checkpoint_every=1000)
    handler = next(h for h in workflow.parser.get_parsed_content("train#handlers")
                   if type(h).__name__ == "DeferredQuantizationHandler")
    assert handler.start == "auto" and handler.auto_min == 1 and handler.auto_max == 3  # max(1, 4 // 4), 4 * 3 // 4
    assert handler.summary_writer is workflow.parser.get_parsed_content("tb_writer")
    workflow.run()
    network = workflow.parser.get_parsed_content("network")
    workflow.finalize()
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert network.quantizer.active and 1 <= info["switch"]["epoch"] <= 3


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:  # MONAI wraps errors of config expressions in a RuntimeError
        error = error.__cause__
    return error


def test_missing_dataset_dir_stops_with_a_clear_message(tmp_path):
    missing = tmp_path / "no_such_odir"
    for overrides, pattern in (
        ({"dataset_dir": str(missing)}, r"(?s)no_such_odir.*obtain it yourself"),
        ({}, r"dataset_dir is empty.*quickstart"),
    ):
        workflow = ConfigWorkflow(config_file=TRAIN, workflow_type="train", run_id="training",
                                  meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=False,
                                  output_dir=str(tmp_path / "out"), **overrides)
        with pytest.raises(Exception) as info:
            workflow.initialize()
        cause = _root_cause(info.value)
        assert isinstance(cause, FileNotFoundError)
        assert re.search(pattern, str(cause)), str(cause)


class _Killed(RuntimeError):
    pass


@pytest.mark.parametrize("kill_at", [3, 6])  # before the switch (end of epoch 2 = iteration 4) and after it
def test_resume_after_an_interrupted_run_follows_the_same_schedule(tmp_path, kill_at):
    settings = {"num_epochs": 3, "quantize_start": 2, "checkpoint_every": 1, "synthetic_images": 24}
    # 1. a run killed mid-epoch (2 iterations per epoch: 21 training images, batch 8, drop_last)
    first = _workflow(tmp_path, **settings)
    trainer = first.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch_length == 2

    def kill(engine):
        raise _Killed(f"killed at iteration {engine.state.iteration}")

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=kill_at), kill)
    with pytest.raises(Exception) as info:
        first.run()
    assert isinstance(_root_cause(info.value), _Killed)
    fired_first = hasattr(trainer.state, "deferred_switch")
    assert fired_first == (kill_at > 4)
    # 2. resumed from the newest checkpoint: continues at the saved iteration, switches exactly once overall
    second = _workflow(tmp_path, resume_from="latest", **settings)
    resumed = second.parser.get_parsed_content("train#trainer")
    network = second.parser.get_parsed_content("network")
    assert resumed.state.iteration == kill_at
    assert network.quantizer.active == fired_first
    second.run()
    second.finalize()
    assert resumed.state.iteration == 6 and network.quantizer.active
    fired_second = hasattr(resumed.state, "deferred_switch")
    assert fired_first + fired_second == 1
    if fired_second:
        assert resumed.state.deferred_switch["epoch"] == 2


def test_torchrun_two_gloo_processes_share_the_codebook(tmp_path):
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"finalize": [
        "$torch.save(@network.module.quantizer.state_dict(), @output_dir + '/codebook_rank' + str(dist.get_rank()) + '.pt')",
        "$@tb_writer.close()",
        "$dist.barrier()",
    ]}))
    configs = [TRAIN, QUICKSTART, str(BUNDLE / "configs" / "multi_gpu_train.json"), str(dump)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
           "run", "training", "--config_file", str(configs), "--output_dir", str(tmp_path / "run"),
           "--num_epochs", "2", "--quantize_start", "1", "--synthetic_images", "40", "--discriminator_start", "2",
           "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
           "--logging_file", str(BUNDLE / "configs" / "logging.conf")]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / "run" / f"codebook_rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["_extra_state"] == ranks[1]["_extra_state"] == {"active": True}
    assert torch.equal(ranks[0]["weight"], ranks[1]["weight"])
    assert (tmp_path / "run" / "checkpoints" / "model_final.pt").is_file()  # rank 0 saved


@pytest.mark.slow
def test_deferred_beats_standard_on_coverage_without_worse_reconstruction(tmp_path):
    """The quickstart training (16 epochs of the tiny tokenizer) with the standard vs the deferred schedule."""
    results = {}
    for schedule in ("standard", "deferred"):
        workflow = _workflow(tmp_path / schedule, str(SCHEDULES / f"{schedule}.json"), num_epochs=16,
                             synthetic_images=96, discriminator_start=120, checkpoint_every=1000)
        assert workflow.parser.get_parsed_content("quantize_start") == (None if schedule == "standard" else 8)
        workflow.run()
        results[schedule] = dict(workflow.parser.get_parsed_content("validate#evaluator").state.metrics)
        workflow.finalize()
    standard, deferred = results["standard"], results["deferred"]
    assert deferred["val_usage"] > standard["val_usage"] + 0.2
    assert deferred["val_perplexity"] > 2 * standard["val_perplexity"]
    assert deferred["val_psnr"] > standard["val_psnr"] - 1.0  # reconstruction not clearly worse
