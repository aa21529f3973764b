"""The bundles' start-up checks (medvq.utils.checks), run in-process through monai.bundle.ConfigWorkflow.

Each case is a bad override that used to pass silently or fail late (issue 10, items 4, 5, 7, 9): it must now stop
``initialize`` with a ``SettingsError`` naming the knob, the value and the fix, before any model is trained (no
checkpoints or TensorBoard folder) and, for knobs that need no data, before any data is read (no ``datalist.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from medvq.utils import SettingsError

ROOT = Path(__file__).resolve().parents[2]
VQ = ROOT / "bundles" / "odir_vq" / "configs"
VAR = ROOT / "bundles" / "odir_var" / "configs"
QUICKSTART = str(ROOT / "configs" / "quickstart.json")
MEDIUM = str(ROOT / "configs" / "medium.json")
SCHEDULES = sorted(str(p) for p in (ROOT / "configs" / "schedules").glob("*.json"))
VQ_TRAIN, STAGE1, STAGE2 = str(VQ / "train.json"), str(VAR / "train_tokenizer.json"), str(VAR / "train.json")
# odir_var at tiny sizes (as tests/bundles/test_odir_var.py): 32 px, an 8x8 latent, scales 1, 2, 4, 8
TINY_VAR = {"image_size": 32, "scales": [1, 2, 4, 8], "num_embeddings": 32, "embedding_dim": 4, "synthetic_images": 24,
            "synthetic_size": 48, "num_workers": 0, "batch_size": 4}


def _workflow(configs, meta_dir: Path = VQ, run_id: str = "training", **overrides) -> ConfigWorkflow:
    return ConfigWorkflow(config_file=[str(c) for c in configs], meta_file=str(meta_dir / "metadata.json"),
                          logging_file=False, workflow_type=None, run_id=run_id, **overrides)


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:  # MONAI wraps errors of config expressions in a RuntimeError
        error = error.__cause__
    return error


def _refused(configs, out: Path, meta_dir: Path = VQ, **overrides) -> SettingsError:
    """Initialize the bundle, expect a SettingsError, and check that nothing was trained."""
    workflow = _workflow(configs, meta_dir, output_dir=str(out), **overrides)
    with pytest.raises(Exception) as info:
        workflow.initialize()
    cause = _root_cause(info.value)
    assert isinstance(cause, SettingsError) and isinstance(cause, ValueError), repr(cause)
    for run_dir in (out, out / "tokenizer", out / "generator"):
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "tensorboard").exists()
    return cause


def _vq(out: Path, **overrides) -> SettingsError:
    return _refused([VQ_TRAIN, QUICKSTART], out, num_workers=0, **overrides)


# ---------------------------------------------------------------------------- item 9: names and types of knobs
def test_unknown_network_preset_names_the_knob_and_the_presets(tmp_path):
    error = _vq(tmp_path, network_preset="vqgan_f32")
    assert str(error) == ("--network_preset 'vqgan_f32' is not a preset; choose one of: vqgan_f16, vqgan_f8, "
                          "vqgan_tiny")
    assert not (tmp_path / "datalist.json").exists()  # before any data was read


def test_lr_that_is_not_a_number(tmp_path):
    error = _vq(tmp_path, lr="abc")
    assert str(error) == "--lr must be a number > 0, got 'abc'"
    assert not (tmp_path / "datalist.json").exists()


def test_every_bad_knob_at_once(tmp_path):
    error = _vq(tmp_path, lr="abc", network_preset="vqgan_f32", batch_size=0, val_fraction=0)
    assert len(error.problems) == 4
    for knob in ("--lr", "--network_preset", "--batch_size", "--val_fraction"):
        assert knob in str(error)


def test_a_bad_knob_is_reported_before_a_missing_dataset(tmp_path):
    """The settings check is the first initialize expression and references no data: it runs before the datalists
    are built, so the bad knob is reported, not the missing dataset_dir."""
    error = _refused([VQ_TRAIN], tmp_path, dataset_dir=str(tmp_path / "no_such_odir"), lr="abc")
    assert "--lr" in str(error)


# ------------------------------------------------------------------------- item 7: checked before data is read
def test_image_size_not_a_multiple_of_the_preset_factor(tmp_path):
    error = _vq(tmp_path, image_size=63)
    assert "--image_size 63 is not a multiple of vqgan_tiny's downsampling factor 4" in str(error)
    assert "60 or 64" in str(error)
    assert not (tmp_path / "datalist.json").exists()


def test_image_size_against_the_multiscale_scales(tmp_path):
    error = _refused([STAGE1, QUICKSTART], tmp_path, VAR, **{**TINY_VAR, "image_size": 63})
    assert "--image_size 63 does not fit msvqgan_tiny with --scales ending at 8" in str(error)
    assert "--image_size 32" in str(error)
    assert not (tmp_path / "datalist.json").exists()


def test_quantize_num_samples_below_the_codebook_size(tmp_path):
    error = _vq(tmp_path, quantize_num_samples=10)
    assert "--quantize_num_samples 10 is below --num_embeddings 256" in str(error)
    assert not (tmp_path / "datalist.json").exists()


# ------------------------------------------------------------------------ item 5: a switch that never fires
def test_quantize_start_beyond_the_epochs(tmp_path):
    error = _vq(tmp_path, quantize_start=100, num_epochs=4)
    assert "--quantize_start 100 (epochs) is never reached" in str(error) and "--num_epochs is 4" in str(error)
    assert "between 1 and 3" in str(error)
    assert not (tmp_path / "datalist.json").exists()


def test_quantize_start_at_the_last_epoch_is_refused_too(tmp_path):
    error = _vq(tmp_path, quantize_start=4, num_epochs=4)
    assert "end of the last epoch would leave no quantized training" in str(error)


def test_quantize_start_beyond_the_iterations(tmp_path):
    # 24 generated images: 20 training images, batch 8 -> 2 iterations per epoch, 8 in 4 epochs
    error = _vq(tmp_path, quantize_start=100, quantize_start_unit="iterations", num_epochs=4, synthetic_images=24)
    assert "--quantize_start 100 (iterations) is never reached" in str(error)
    assert "the run has 8 iterations (4 epochs of 2" in str(error) and "between 1 and 7" in str(error)


# ---------------------------------------------------------------------- item 4: fewer images than one batch
def test_fewer_training_images_than_one_batch(tmp_path):
    # 6 generated images = 3 patients; one patient (2 images) goes to validation: 4 training images, batch 8
    error = _vq(tmp_path, synthetic_images=6, batch_size=8)
    text = str(error)
    assert "the training split has 4 images" in text and "--batch_size 8" in text and "0 iterations" in text
    assert "--synthetic_images" in text and "--batch_size 4 or less" in text


def test_one_synthetic_image(tmp_path):
    error = _vq(tmp_path, synthetic_images=1)
    assert len(error.problems) == 2
    assert "the training split has 1 image," in error.problems[0]
    assert "the validation split has 0 images" in error.problems[1] and "--val_fraction" in error.problems[1]


def test_generator_stage_checks_its_own_batch_size(tmp_path):
    """odir_var stage 2 trains on the same training split with generator_batch_size (after loading the tokenizer)."""
    stage1 = _workflow([STAGE1, QUICKSTART], VAR, output_dir=str(tmp_path), **TINY_VAR)
    network = stage1.parser.get_parsed_content("network_def")
    checkpoint = tmp_path / "tokenizer" / "checkpoints" / "model_final.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(network.state_dict(), checkpoint)
    workflow = _workflow([STAGE1, STAGE2, QUICKSTART], VAR, output_dir=str(tmp_path), **TINY_VAR,
                         generator_batch_size=64)
    with pytest.raises(Exception) as info:
        workflow.initialize()
    error = _root_cause(info.value)
    assert isinstance(error, SettingsError), repr(error)
    assert "--generator_batch_size 64" in str(error) and "the training split has" in str(error)
    assert not (tmp_path / "generator" / "checkpoints").exists()


def test_generator_stage_names_a_bad_preset_before_the_tokenizer_checkpoint(tmp_path):
    error = _refused([STAGE1, STAGE2, QUICKSTART], tmp_path, VAR, **TINY_VAR, generator_preset="var_d30",
                     generator_lr="fast")
    assert "--generator_preset 'var_d30'" in str(error) and "--generator_lr" in str(error)


def test_inference_names_a_bad_preset_before_loading_the_checkpoint(tmp_path):
    error = _refused([VQ_TRAIN, QUICKSTART, VQ / "inference.json"], tmp_path, run_id="inference",
                     network_preset="vqgan_f32", input_dir=str(tmp_path))
    assert "--network_preset 'vqgan_f32'" in str(error)


# ------------------------------------------------------------------ the shipped configs pass their own checks
def _initialize_items(workflow: ConfigWorkflow) -> list[str]:
    return workflow.parser.get("initialize")


def _settings_check(configs, meta_dir: Path, run_id: str = "training", **overrides) -> None:
    """Evaluate only the settings check (the first initialize item): it must pass."""
    workflow = _workflow(configs, meta_dir, run_id, output_dir="unused", **overrides)
    workflow.parser.parse(True)
    assert "medvq.utils.check_" in _initialize_items(workflow)[0]
    workflow.parser.get_parsed_content("initialize#0")


@pytest.mark.parametrize("overlays", [[], [QUICKSTART], [QUICKSTART, MEDIUM], *([QUICKSTART, s] for s in SCHEDULES),
                                      *([s] for s in SCHEDULES)])
def test_odir_vq_configs_pass_their_settings_check(overlays):
    for extra in ([], [VQ / "multi_gpu_train.json"]):
        _settings_check([VQ_TRAIN, *overlays, *extra], VQ)
    _settings_check([VQ_TRAIN, *overlays, VQ / "evaluate.json"], VQ, run_id="evaluate")
    _settings_check([VQ_TRAIN, *overlays, VQ / "inference.json"], VQ, run_id="inference")


@pytest.mark.parametrize("overlays", [[], [QUICKSTART], [QUICKSTART, MEDIUM], *([QUICKSTART, s] for s in SCHEDULES),
                                      *([s] for s in SCHEDULES)])
def test_odir_var_configs_pass_their_settings_check(overlays):
    for extra in ([], [VAR / "multi_gpu_train_tokenizer.json"]):
        _settings_check([STAGE1, *overlays, *extra], VAR)
    for extra in ([], [VAR / "multi_gpu_train.json"]):
        _settings_check([STAGE1, STAGE2, *overlays, *extra], VAR)
    _settings_check([STAGE1, STAGE2, *overlays, VAR / "sample.json"], VAR, run_id="sample")
    _settings_check([STAGE1, STAGE2, *overlays, VAR / "evaluate.json"], VAR, run_id="evaluate")


def test_the_data_check_runs_after_the_run_folder_check_and_before_any_model():
    """Order of the training configs' initialize lists: settings check first; the data check after the run-folder
    check (which must see the folder before anything is written into it) and before the trainer is built."""
    for path in (VQ / "train.json", VQ / "multi_gpu_train.json", VAR / "train_tokenizer.json",
                 VAR / "multi_gpu_train_tokenizer.json", VAR / "train.json", VAR / "multi_gpu_train.json"):
        items = json.loads(path.read_text())["initialize"]
        assert "medvq.utils.check_" in items[0] and "check_training_data" not in items[0], path
        data = next(i for i, item in enumerate(items) if "check_training_data" in item)
        folder = [i for i, item in enumerate(items) if "check_run_folder" in item]
        trainer = next(i for i, item in enumerate(items) if "@train#trainer" in item)
        assert all(i < data for i in folder) and data < trainer, path
