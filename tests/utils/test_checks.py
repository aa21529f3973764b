"""medvq.utils.checks: every knob's rule, the cross-checks (image size vs preset, samples vs codebook, the switch vs
the run's length) and the data check (a batch per process, a validation split, latents for the codebook)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medvq.utils import SettingsError, check_generator_settings, check_tokenizer_settings, check_training_data, checks


def _problems(check, *args, **knobs) -> list[str]:
    with pytest.raises(SettingsError) as info:
        check(*args, **knobs)
    assert isinstance(info.value, ValueError)
    return info.value.problems


def _split(num_train: int, num_val: int = 2) -> SimpleNamespace:
    return SimpleNamespace(train=[{"image": f"t{i}"} for i in range(num_train)],
                           val=[{"image": f"v{i}"} for i in range(num_val)])


# ------------------------------------------------------------------------------------------------ single knobs
def test_lr_that_is_not_a_number_names_the_knob_and_the_rule():
    assert _problems(check_tokenizer_settings, lr="abc") == ["--lr must be a number > 0, got 'abc'"]


def test_unknown_preset_lists_the_valid_ones():
    (problem,) = _problems(check_tokenizer_settings, network_preset="vqgan_f32")
    assert problem == "--network_preset 'vqgan_f32' is not a preset; choose one of: vqgan_f16, vqgan_f8, vqgan_tiny"
    (problem,) = _problems(check_tokenizer_settings, tokenizer_preset="vqgan_tiny")
    assert "msvqgan_f16, msvqgan_tiny" in problem
    (problem,) = _problems(check_generator_settings, generator_preset="var_d30")
    assert "--generator_preset 'var_d30'" in problem and "var_d16, var_tiny" in problem


def test_all_problems_are_reported_at_once():
    with pytest.raises(SettingsError) as info:
        check_tokenizer_settings(lr="abc", network_preset="vqgan_f32", batch_size=0, val_fraction=1.0)
    assert len(info.value.problems) == 4
    text = str(info.value)
    assert text.startswith("4 settings are invalid:")
    for knob in ("--lr", "--network_preset", "--batch_size", "--val_fraction"):
        assert knob in text


@pytest.mark.parametrize(("knob", "value", "expected"), [
    ("batch_size", 0, "--batch_size must be an integer >= 1, got 0"),
    ("batch_size", 8.0, "--batch_size must be an integer >= 1, got 8.0"),
    ("num_epochs", True, "--num_epochs must be an integer >= 1, got True"),
    ("checkpoint_every", 0, "--checkpoint_every must be an integer >= 1 (iterations), got 0"),
    ("val_fraction", 0, "--val_fraction must be a number in (0, 1)"),
    ("warmup_iterations", 0, "1 = no warm-up"),
    ("grad_clip_norm", -1, ("--grad_clip_norm must be a number > 0 or null (no clipping; None on the command line), "
                           "got -1")),
    ("tokenizer_lr", "x", "--tokenizer_lr must be a number > 0 or null (use --lr; None on the command line), got 'x'"),
    ("lr", float("nan"), "--lr must be a number > 0, got nan"),
    ("quantize_start", -1, "--quantize_start must be null (None on the command line; standard"),
    ("quantize_start", "null", "got 'null'"),  # what the command line makes of null
    ("quantize_start", "soon", "or 'auto', got 'soon'"),
    ("quantize_start_unit", "steps", ("--quantize_start_unit 'steps' is not a valid value; choose one of: epochs, "
                                     "iterations")),
    ("amp", "true", "--amp must be true or false (True / False on the command line), got 'true'"),
    ("scales", "1,2,4", "--scales must be a non-empty list"),
    ("condition_dropout", 1.5, "--condition_dropout must be a number in [0, 1], got 1.5"),
    ("output_dir", "", "--output_dir must be a non-empty string"),
    ("modality", "", "--modality '' is not a modality; choose one of: fundus, natural, ct, mr, xray, rgb"),
    ("data_format", "dicom", "--data_format 'dicom' is not a valid value; choose one of: odir, images, imagenet100"),
    ("spatial_dims", 4, "--spatial_dims must be one of 2, 3 (2D images or slices, 3D volumes), got 4"),
    ("slice_axis", 3, "--slice_axis must be one of 0, 1, 2"),
    ("roi_size", 4, "--roi_size must be an integer >= 8 or 3 of them (the 3D crop, voxels), got 4"),
    ("pixdim", 0, "--pixdim must be null (keep the source spacing"),
    ("window", [240, -160], "--window must be null (the modality's default"),
    ("channels", 2, "--channels must be one of 1, 3 (grayscale or RGB) or null (follow the data"),
    ("group_by", "patient", "--group_by 'patient' is not a valid value; choose one of: folder, patient_id, file"),
])
def test_each_rule_names_the_knob_the_rule_and_the_value(knob, value, expected):
    (problem,) = _problems(check_generator_settings if knob == "condition_dropout" else check_tokenizer_settings,
                           **{knob: value})
    assert problem.startswith(expected) or expected in problem, problem


def test_every_multiscale_builder_is_a_valid_tokenizer_preset():
    import medvq.networks

    assert {n for n in medvq.networks.__all__ if n.startswith("msvqgan_")} == set(checks.MULTISCALE_PRESETS)


def test_an_unknown_knob_name_is_a_type_error():
    with pytest.raises(TypeError, match="unknown setting"):
        check_tokenizer_settings(learning_rate=0.1)


# ------------------------------------------------------------------------------------------------ cross-checks
@pytest.mark.parametrize(("size", "ok"), [(64, True), (60, True), (63, False), (66, False)])
def test_image_size_must_be_a_multiple_of_the_preset_factor(size, ok):
    if ok:
        check_tokenizer_settings(network_preset="vqgan_tiny", image_size=size)
        return
    (problem,) = _problems(check_tokenizer_settings, network_preset="vqgan_tiny", image_size=size)
    assert f"--image_size {size} is not a multiple of vqgan_tiny's downsampling factor 4" in problem
    assert f"{size // 4 * 4} or {size // 4 * 4 + 4}" in problem


def test_factor_16_preset():
    (problem,) = _problems(check_tokenizer_settings, network_preset="vqgan_f16", image_size=200)
    assert "factor 16" in problem and "192 or 208" in problem
    check_tokenizer_settings(network_preset="vqgan_f16", image_size=256)


def test_multiscale_last_scale_must_be_the_latent_grid():
    check_tokenizer_settings(tokenizer_preset="msvqgan_tiny", image_size=32, scales=[1, 2, 4, 8])
    (problem,) = _problems(check_tokenizer_settings, tokenizer_preset="msvqgan_tiny", image_size=64,
                           scales=[1, 2, 4, 8])
    assert "--scales ending at 8" in problem and "--image_size 32 or end --scales at 16" in problem
    (problem,) = _problems(check_tokenizer_settings, tokenizer_preset="msvqgan_f16", image_size=63)
    assert "--image_size 256" in problem  # the preset's default scales end at 16: 16 * 16


def test_the_network_constructor_checks_run_on_the_meta_device():
    (problem,) = _problems(check_tokenizer_settings, tokenizer_preset="msvqgan_tiny", image_size=32,
                           scales=[1, 4, 2, 8])
    assert "do not build msvqgan_tiny" in problem and "increasing" in problem


def test_quantize_num_samples_must_cover_the_codebook_unless_standard():
    (problem,) = _problems(check_tokenizer_settings, quantize_start=8, num_embeddings=256, quantize_num_samples=10)
    assert "--quantize_num_samples 10 is below --num_embeddings 256" in problem
    check_tokenizer_settings(quantize_start=None, num_embeddings=256, quantize_num_samples=10)  # no k-means
    check_tokenizer_settings(quantize_start=0, num_embeddings=256, quantize_num_samples=256)


@pytest.mark.parametrize(("start", "ok"), [(None, True), (0, True), (1, True), (3, True), (4, False), (100, False)])
def test_the_switch_must_leave_quantized_epochs(start, ok):
    knobs = {"quantize_start": start, "quantize_start_unit": "epochs", "num_epochs": 4}
    if ok:
        check_tokenizer_settings(**knobs)
        return
    (problem,) = _problems(check_tokenizer_settings, **knobs)
    assert f"--quantize_start {start} (epochs) is never reached" in problem
    assert "--num_epochs is 4" in problem and "between 1 and 3" in problem and "end of the last epoch" in problem


def test_the_epoch_rule_does_not_judge_a_switch_in_iterations():
    check_tokenizer_settings(quantize_start=100, quantize_start_unit="iterations", num_epochs=4)


@pytest.mark.parametrize(("low", "high", "message"), [
    (4, None, "--auto_switch_min 4 (epochs) can never switch"),
    (1, 4, "--auto_switch_max 4 (epochs) is not within the run"),
    (3, 2, "--auto_switch_max 2 is below --auto_switch_min 3"),
])
def test_auto_switch_window_within_the_run(low, high, message):
    knobs = {"quantize_start": "auto", "quantize_start_unit": "epochs", "num_epochs": 4, "auto_switch_min": low,
             "auto_switch_max": high}
    (problem,) = _problems(check_tokenizer_settings, **knobs)
    assert message in problem
    check_tokenizer_settings(**{**knobs, "auto_switch_min": 1, "auto_switch_max": 3})


def test_reconstruction_weights():
    (problem,) = _problems(check_tokenizer_settings, l1_weight=0, l2_weight=0, perceptual_weight=0)
    assert "all 0" in problem
    (problem,) = _problems(check_tokenizer_settings, perceptual_weight=0.1, perceptual_weights="/no/such.pt")
    assert "--perceptual_weights '/no/such.pt' is not a file" in problem


def test_generator_is_built_with_the_tokenizer_scales():
    knobs = {"tokenizer_preset": "msvqgan_tiny", "image_size": 32, "scales": [1, 2, 4, 8], "num_embeddings": 32,
             "embedding_dim": 4, "generator_preset": "var_tiny", "condition_dropout": 0.1}
    check_generator_settings(**knobs)
    (problem,) = _problems(check_generator_settings, **{**knobs, "image_size": 64})
    assert "--scales ending at 8" in problem


# ------------------------------------------------------------------------------------------------ the data check
def test_fewer_images_than_a_batch_names_the_count_the_batch_and_the_fix():
    (problem,) = _problems(check_training_data, _split(4), batch_size=8)
    assert "the training split has 4 images" in problem and "--batch_size 8" in problem
    assert "0 iterations" in problem and "at least 8 training images" in problem
    assert "--synthetic_images" in problem and "--batch_size 4 or less" in problem
    assert check_training_data(_split(8), batch_size=8) == 1
    assert check_training_data(_split(17), batch_size=8) == 2  # the incomplete third batch is dropped


def test_the_generator_stage_names_its_own_batch_knob():
    (problem,) = _problems(check_training_data, _split(21, 0), batch_size=64, batch_size_knob="generator_batch_size",
                           validation=False)
    assert "--generator_batch_size 64" in problem and "21 images" in problem


def test_an_empty_validation_split_is_an_error():
    (problem,) = _problems(check_training_data, _split(16, 0), batch_size=8)
    assert "the validation split has 0 images" in problem and "--val_fraction" in problem
    assert check_training_data(_split(16, 0), batch_size=8, validation=False) == 2


def test_one_image_reports_both_splits():
    problems = _problems(check_training_data, _split(1, 0), batch_size=8)
    assert len(problems) == 2 and "has 1 image," in problems[0] and "validation split has 0 images" in problems[1]


def test_counts_are_per_process_under_ddp(monkeypatch):
    monkeypatch.setattr(checks, "world_size", lambda: 2)
    # 12 images over 2 processes: 6 each (DistributedSampler pads to a multiple), less than a batch of 8
    (problem,) = _problems(check_training_data, _split(12), batch_size=8)
    assert "12 images, 6 per process (2 processes)" in problem and "at least 15 training images" in problem
    assert check_training_data(_split(16), batch_size=8) == 1
    (problem,) = _problems(check_training_data, _split(16, 1), batch_size=8)
    assert "validation split has 1 image for 2 processes" in problem


@pytest.mark.parametrize(("start", "ok"), [(19, True), (20, False), (100, False)])
def test_a_switch_in_iterations_must_fire_before_the_last_iteration(start, ok):
    knobs = {"batch_size": 2, "num_epochs": 4, "quantize_start": start, "quantize_start_unit": "iterations"}
    if ok:
        assert check_training_data(_split(10), **knobs) == 5
        return
    (problem,) = _problems(check_training_data, _split(10), **knobs)
    assert f"--quantize_start {start} (iterations) is never reached" in problem
    assert "the run has 20 iterations (4 epochs of 5" in problem and "between 1 and 19" in problem


def test_an_auto_switch_in_iterations_needs_auto_min_within_the_run():
    (problem,) = _problems(check_training_data, _split(10), batch_size=2, num_epochs=4, quantize_start="auto",
                           quantize_start_unit="iterations", auto_switch_min=20)
    assert "--auto_switch_min 20 (iterations)" in problem


def test_one_pass_must_hold_enough_latents_for_the_codebook():
    # vqgan_tiny at 16 px: a 4x4 latent, 16 latents per image; 8 images in one pass hold 128 latents
    knobs = {"batch_size": 8, "quantize_start": 1, "num_embeddings": 256, "network_preset": "vqgan_tiny",
             "image_size": 16}
    (problem,) = _problems(check_training_data, _split(8), **knobs)
    assert "only 128 latents" in problem and "8 training images x 16 latents" in problem
    check_training_data(_split(8), **{**knobs, "num_embeddings": 128})
    check_training_data(_split(8), **{**knobs, "quantize_start": None})  # standard: no switch
    (problem,) = _problems(check_training_data, _split(8),
                           **{**knobs, "num_embeddings": 64, "quantize_num_samples": 32})
    assert "--quantize_num_samples 32 is below --num_embeddings 64" in problem
    # the multi-scale tokenizer collects its residual pyramid: 1 + 4 + 16 = 21 per image at scales 1, 2, 4
    (problem,) = _problems(check_training_data, _split(8), batch_size=8, quantize_start=1, num_embeddings=256,
                           tokenizer_preset="msvqgan_tiny", image_size=16, scales=[1, 2, 4])
    assert "only 168 latents" in problem


def test_data_knobs_against_each_other_and_the_3d_geometry():
    problems = _problems(check_tokenizer_settings, modality="fundus", spatial_dims=3, data_format="odir",
                         network_preset="vqgan_tiny", roi_size=30)
    assert any("--modality fundus is 2D photographs, but --spatial_dims is 3" in p for p in problems)
    assert any("--data_format odir is 2D photographs, but --spatial_dims is 3" in p for p in problems)
    assert any("--roi_size 30 is not a multiple of vqgan_tiny's downsampling factor 4" in p for p in problems)
    assert _problems(check_tokenizer_settings, data_format="odir", modality="ct") == [
        ("--data_format odir reads ODIR-5K fundus photographs, but --modality is 'ct': use --modality fundus, or "
         "--data_format images for other images")]
    # multi-scale in 3D: the last scale is the latent grid of the crop, built with 3-D scales
    (problem,) = _problems(check_generator_settings, spatial_dims=3, roi_size=32, tokenizer_preset="msvqgan_tiny",
                           scales=[1, 2, 4, 16], image_size=256)
    assert "roi_size / 4 = [8, 8, 8]; end --scales at 8" in problem
    check_generator_settings(spatial_dims=3, roi_size=32, tokenizer_preset="msvqgan_tiny", scales=[1, 2, 4, 8],
                             image_size=256, generator_preset="var_tiny", num_embeddings=32, embedding_dim=4)


def test_codebook_projection_needs_gradient_updates_and_revival_is_a_choice():
    check_tokenizer_settings(tokenizer_preset="msvqgan_tiny", image_size=32, scales=[1, 2, 4, 8],
                             codebook_update="gradient", codebook_projection=True, revival="per_scale")
    (problem,) = _problems(check_tokenizer_settings, tokenizer_preset="msvqgan_tiny", image_size=32,
                           scales=[1, 2, 4, 8], codebook_update="ema", codebook_projection=True)
    assert "--codebook_projection True" in problem and "codebook_update='gradient'" in problem
    (problem,) = _problems(check_tokenizer_settings, revival="scales")
    assert "revival" in problem and "per_scale" in problem
