"""medvq.handlers.tensorboard: tag groups, the run's settings as text, HParams summaries (read back as TensorBoard
reads them: EventAccumulator and the HParams plugin's own parsers)."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import TensorBoardStatsHandler
from torch.utils.tensorboard import SummaryWriter

from medvq.handlers import MetricsWriter, RunSummaryHandler, grouped_scalars, grouped_tag


def _accumulator(log_dir, **size_guidance):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, **size_guidance})
    acc.Reload()
    return acc


def _steps(log_dir, tag) -> list[int]:
    """Steps of the events holding ``tag`` (the HParams summaries carry no tensor, so EventAccumulator lists them under
    PluginTagToContent only)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    events = [e for path in sorted(log_dir.glob("events.out.tfevents.*")) for e in EventFileLoader(str(path)).Load()]
    return [e.step for e in events if any(value.tag == tag for value in e.summary.value)]


def _text(acc, tag) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]


@pytest.mark.parametrize(("group", "name", "tag"), [
    ("val", "val_psnr", "val/psnr"),
    ("val", "val_tokens_usage_s3", "val/tokens_usage_s3"),
    ("val", "psnr", "val/psnr"),
    ("train", "loss", "train/loss"),
    ("train", "token_acc_s0", "train/token_acc_s0"),
    ("train", "switch/iteration", "switch/iteration"),  # already grouped
])
def test_grouped_tag(group, name, tag):
    assert grouped_tag(group, name) == tag


def test_grouped_scalars_renames_every_key():
    out = {"loss": torch.tensor(0.5), "lr": 0.1}
    assert grouped_scalars("train", out) == {"train/loss": out["loss"], "train/lr": 0.1}


def test_metrics_writer_rejects_a_bad_group():
    for group in ("", "val/x", None):
        with pytest.raises(ValueError, match="group must be a non-empty name"):
            MetricsWriter(group)


def test_monai_stats_handler_with_the_writers_groups_iteration_and_epoch_values(tmp_path):
    """MONAI's TensorBoardStatsHandler with grouped_scalars (iterations) and MetricsWriter (epochs): every tag in its
    group, epoch values at the step the transform gives, non-scalar metrics skipped."""
    engine = Engine(lambda e, batch: {"loss": torch.tensor(float(batch)), "lr": 0.01})

    @engine.on(Events.EPOCH_COMPLETED)
    def metrics(e):  # what a validator's metrics look like, with a metric's whole dict beside its keys
        e.state.metrics.update({"val_psnr": 20.0 + e.state.epoch, "coverage": {"val_usage": 0.5}, "val_usage": 0.5})

    writer = SummaryWriter(str(tmp_path))
    TensorBoardStatsHandler(writer, output_transform=lambda out: grouped_scalars("train", out),
                            epoch_event_writer=MetricsWriter("val", global_epoch_transform=lambda epoch: 3 * epoch),
                            ).attach(engine)
    engine.run([1, 2, 3], max_epochs=2)
    writer.close()
    acc = _accumulator(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "train/lr", "val/psnr", "val/usage"]
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [(e.step, e.value) for e in acc.Scalars("val/psnr")] == [(3, 21.0), (6, 22.0)]


def test_run_summary_writes_settings_and_run_info_at_each_start_and_hparams_at_completion(tmp_path):
    from tensorboard.plugins.hparams import metadata

    (tmp_path / "run_info.json").write_text(json.dumps({"schedule": "deferred", "seed": 3}, indent=2))
    writer = SummaryWriter(str(tmp_path / "tb"))
    handler = RunSummaryHandler(
        writer, settings={"lr": 0.002, "scales": [1, 2], "quantize_start": None, "odd": "a|b"},
        run_info_dir=tmp_path, hparams={"schedule": "deferred", "quantize_start": None, "lr": 0.002, "amp": False},
        metrics=["val/psnr", "val/usage"],
    )
    engine = Engine(lambda e, batch: None)
    handler.attach(engine)

    @engine.on(Events.EPOCH_COMPLETED)
    def scalars(e):
        writer.add_scalar("val/psnr", 20.0 + e.state.epoch, e.state.iteration)

    engine.run([0, 0], max_epochs=3)
    writer.close()

    acc = _accumulator(tmp_path / "tb")
    assert {"run/config", "run/run_info"} <= set(acc.Tags()["tensors"])
    ((step, table),) = _text(acc, "run/config")
    assert step == 0
    assert "| `lr` | `0.002` |" in table and "| `scales` | `[1, 2]` |" in table
    assert "| `quantize_start` | `null` |" in table and '| `odd` | `"a\\|b"` |' in table  # a | would end the cell
    ((_, info),) = _text(acc, "run/run_info")
    assert info.startswith("```json\n") and json.loads(info.removeprefix("```json\n").removesuffix("\n```")) == {
        "schedule": "deferred", "seed": 3}
    # HParams: the three summaries at the final iteration, parsed by the plugin's own code
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert sorted(content) == [metadata.EXPERIMENT_TAG, metadata.SESSION_END_INFO_TAG, metadata.SESSION_START_INFO_TAG]
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == ["val/psnr", "val/usage"]
    assert [h.name for h in experiment.hparam_infos] == ["schedule", "quantize_start", "lr", "amp"]
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["schedule"].string_value == "deferred"
    assert start.hparams["quantize_start"].string_value == "null"  # None: not dropped, as torch's builder would
    assert start.hparams["lr"].number_value == pytest.approx(0.002)
    assert _steps(tmp_path / "tb", metadata.SESSION_START_INFO_TAG) == [6]
    # the metric column's value is the last value of the run's own tag (no copies under other tags)
    assert acc.Scalars("val/psnr")[-1].value == 23.0 and acc.Tags()["scalars"] == ["val/psnr"]


def test_run_summary_on_a_resumed_start_writes_its_text_at_the_resumed_iteration(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    handler = RunSummaryHandler(writer, settings={"seed": 0})
    engine = Engine(lambda e, batch: None)
    handler.attach(engine)
    engine.load_state_dict({"iteration": 4, "epoch_length": 2, "max_epochs": 3})  # as ResumeFromCheckpoint does
    engine.run([0, 0])
    writer.close()
    acc = _accumulator(tmp_path)
    assert [step for step, _ in _text(acc, "run/config")] == [4]
    assert acc.Tags()["tensors"] == ["run/config"]  # no run_info_dir: no run/run_info; no hparams: no HParams entry


def test_run_summary_argument_errors():
    with pytest.raises(TypeError, match="metrics must be a list of scalar tags"):
        RunSummaryHandler(None, metrics="val/psnr")
    with pytest.raises(ValueError, match="hparams must name at least one"):
        RunSummaryHandler(None, hparams={})
