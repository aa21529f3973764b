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
    assert state["quantizer.active_flag"].dtype == torch.bool and bool(state["quantizer.active_flag"])
    # TensorBoard: every loss term, lr, coverage before and after the switch, PSNR/SSIM, images, histograms
    tags = _scalars(tmp_path / "tensorboard")
    for tag in ("train/loss", "train/rec_loss", "train/vq_loss", "train/g_adv_loss", "train/d_loss", "train/lr",
                "train/batch_perplexity", "val/usage", "val/perplexity", "val/code_distance", "val/dead_codes",
                "val/psnr", "val/ssim", "val/reconstructions", "val/code_index"):
        assert tag in tags, tag
    assert len(tags["val/usage"]) == 2  # one value per epoch: before and after the switch
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


# top-level keys of a train config that are not settings (structure, components, expressions run by the workflow)
_NOT_SETTINGS = {"imports", "datalists", "network_def", "network", "discriminator_def", "discriminator",
                 "tensorboard_step", "initialize", "run", "training", "finalize", "tensorboard_settings",
                 "tensorboard_hparams", "tensorboard_hparam_metrics"}


def _knobs(config_file: str) -> list[str]:
    """The top-level settings of a config file: every key but the ``_desc_`` comments, dicts and structure."""
    config = json.loads(Path(config_file).read_text())
    return [k for k, v in config.items()
            if not k.startswith("_") and not isinstance(v, dict) and k not in _NOT_SETTINGS]


def _served(event_dir: Path, samples_per_plugin: dict[str, int] | None = None):
    """A run folder as TensorBoard's server loads it: its data ingester's size guidance (10 images per tag, 10 texts,
    1000 scalars ...) updated by ``--samples_per_plugin`` (``{"images": 1000}`` for ``images=1000``)."""
    from tensorboard.backend.event_processing import data_ingester, plugin_event_accumulator

    acc = plugin_event_accumulator.EventAccumulator(
        str(event_dir), size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance={**data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE, **(samples_per_plugin or {})})
    acc.Reload()
    return acc


def _text_rows(markdown: str) -> dict[str, str]:
    """``| `key` | `value` |`` rows of a run/config table -> {key: value}."""
    return {m[1]: m[2].replace("\\|", "|") for m in re.finditer(r"^\| `([^`]+)` \| `(.*)` \|$", markdown, re.MULTILINE)}


def test_tensorboard_shows_groups_the_run_config_hparams_and_every_epochs_grid(tmp_path):
    """What TensorBoard's server shows of a run: scalars in train/, val/ (and switch/) groups; the resolved settings and
    run_info.json as text at the start; an HParams entry (schedule, quantize_start, codebook, lr, seed, preset) whose
    metric columns are the run's final coverage and fidelity; and, with the README's --samples_per_plugin images=1000,
    the reconstruction grid of every epoch (the server keeps 10 images per tag by default)."""
    from tensorboard.plugins.hparams import metadata
    from tensorboard.util import tensor_util

    epochs = 11  # one grid more than the server keeps by default
    workflow = _workflow(tmp_path, num_epochs=epochs, quantize_start=5, checkpoint_every=1000)
    settings = {knob: workflow.parser.get_parsed_content(knob) for knob in _knobs(TRAIN)}
    info_at_start = json.loads((tmp_path / "run_info.json").read_text())
    workflow.run()
    final = dict(workflow.parser.get_parsed_content("validate#evaluator").state.metrics)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    workflow.finalize()
    steps_per_epoch = trainer.state.iteration // epochs

    acc = _served(tmp_path / "tensorboard")
    tags = acc.Tags()["tensors"]
    scalars = sorted(t for t in tags if acc.SummaryMetadata(t).plugin_data.plugin_name == "scalars")
    # 1. groups: no flat tag left; the engines' metric names (val_psnr ...) became val/psnr ...
    assert scalars and all(t.split("/")[0] in ("train", "val", "switch") for t in scalars), scalars
    assert {"train/loss", "train/rec_loss", "train/lr", "val/psnr", "val/ssim", "val/usage",
            "val/perplexity", "val/shrinkage", "switch/iteration"} <= set(scalars)
    assert {"val/" + k.removeprefix("val_") for k, v in final.items() if not isinstance(v, dict)} <= set(scalars)

    # 2. text at the start (step 0): every setting of train.json with its resolved value, and run_info.json
    ((config,),) = [[e for e in acc.Tensors("run/config")]]
    assert config.step == 0
    rows = _text_rows(tensor_util.make_ndarray(config.tensor_proto).item().decode())
    assert set(settings) <= set(rows), sorted(set(settings) - set(rows))  # a new knob is missing in the config
    for knob, value in settings.items():
        assert rows[knob] == json.dumps(value, default=str), knob
    assert rows["num_epochs"] == "11" and rows["quantize_start"] == "5" and rows["network_preset"] == '"vqgan_tiny"'
    (run_info,) = acc.Tensors("run/run_info")
    text = tensor_util.make_ndarray(run_info.tensor_proto).item().decode()
    assert json.loads(text.removeprefix("```json\n").removesuffix("\n```")) == info_at_start

    # 3. hparams at the final iteration, metric columns = the final values of the run's own tags
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert hparams == {"stage": "tokenizer", "schedule": "deferred", "quantize_start": "5", "num_embeddings": 256,
                       "embedding_dim": 8, "lr": pytest.approx(0.002), "seed": 0, "preset": "vqgan_tiny"}
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    columns = [m.name.tag for m in experiment.metric_infos]
    assert columns == workflow.parser.get_parsed_content("tensorboard_hparam_metrics")
    last = {t: acc.Tensors(t)[-1] for t in columns}
    for tag in columns:
        if tag.startswith("val/"):
            assert last[tag].step == trainer.state.iteration  # the last validation, at the final iteration
            value = tensor_util.make_ndarray(last[tag].tensor_proto).item()
            assert value == pytest.approx(final["val_" + tag[4:]], rel=1e-6), tag
    assert tensor_util.make_ndarray(last["switch/iteration"].tensor_proto).item() == 5 * steps_per_epoch

    # 4. images: 10 of the 11 grids by default, all 11 with --samples_per_plugin images=1000 (the README's watch
    #    command; the server's images plugin also reads at most that many per tag, and none for images=0)
    grid_steps = [steps_per_epoch * (epoch + 1) for epoch in range(epochs)]
    assert len(acc.Tensors("val/reconstructions")) == 10
    every = _served(tmp_path / "tensorboard", {"images": 1000})
    assert [e.step for e in every.Tensors("val/reconstructions")] == grid_steps
    for readme in (BUNDLE, ROOT / "bundles" / "odir_var"):
        assert "--samples_per_plugin images=1000" in (readme / "docs" / "README.md").read_text()


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
    assert bool(ranks[0]["active_flag"]) and bool(ranks[1]["active_flag"])
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
