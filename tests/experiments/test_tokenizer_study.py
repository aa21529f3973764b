"""medvq.experiments.tokenizer_study: arm parsing, reading a run's TensorBoard file, the ratio table."""

from __future__ import annotations

import json

import pytest

from medvq.experiments.tokenizer_study import Arm, _resumable, format_table, parse_arm, read_run


def test_parse_arm(tmp_path):
    overlay = tmp_path / "o.json"
    overlay.write_text("{}")
    arm = parse_arm(f"def_frozen={overlay}+codebook_lr_scale=0.0+commitment=final")
    assert arm == Arm("def_frozen", (str(overlay),), (("codebook_lr_scale", "0.0"), ("commitment", "final")))
    with pytest.raises(ValueError, match="--arm must look like NAME="):
        parse_arm("no_equals_sign")
    with pytest.raises(ValueError, match="does not exist"):
        parse_arm(f"x={tmp_path / 'missing.json'}")
    with pytest.raises(ValueError, match="neither an overlay"):
        parse_arm("x=oops")


def test_read_run_takes_the_last_validation_scalars_and_the_switch(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tokenizer" / "tensorboard"))
    for epoch, value in enumerate([10.0, 20.0, 30.0], start=1):
        writer.add_scalar("val/perplexity", value, epoch)
        writer.add_scalar("train/loss", 1.0 / epoch, epoch)  # not a validation scalar: left out
        writer.add_scalar("switch/iteration", 80, epoch)  # neither
    writer.close()
    (tmp_path / "tokenizer" / "run_info.json").write_text(json.dumps({"switch": {"iteration": 80}}))
    assert read_run(tmp_path) == {"perplexity": 30.0, "switch_iteration": 80.0}
    with pytest.raises(FileNotFoundError, match="no validation scalars"):
        read_run(tmp_path / "empty")


def test_read_run_reads_runs_logged_with_the_old_flat_tags(tmp_path):
    """Runs of earlier studies logged ``val_x`` (no ``val/`` group): read as ``x``; a run resumed after the change has
    both, and the later step wins."""
    from torch.utils.tensorboard import SummaryWriter

    old = SummaryWriter(str(tmp_path / "old" / "tensorboard"))
    old.add_scalar("val_psnr", 21.0, 4)
    old.add_scalar("loss", 1.0, 4)
    old.close()
    assert read_run(tmp_path / "old") == {"psnr": 21.0}
    mixed = SummaryWriter(str(tmp_path / "old" / "tensorboard"))  # a later start of the same run, new tags
    mixed.add_scalar("val/psnr", 23.0, 8)
    mixed.close()
    assert read_run(tmp_path / "old") == {"psnr": 23.0}


def test_an_unfinished_run_resumes_and_one_without_a_checkpoint_is_moved_aside(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    assert not _resumable(tmp_path / "never_started")
    with_checkpoint = tmp_path / "a_s0"
    (with_checkpoint / "tokenizer" / "checkpoints").mkdir(parents=True)
    (with_checkpoint / "tokenizer" / "checkpoints" / "checkpoint_8.pt").write_bytes(b"x")
    assert _resumable(with_checkpoint) and with_checkpoint.is_dir()
    events_only = tmp_path / "b_s0"
    writer = SummaryWriter(str(events_only / "tokenizer" / "tensorboard"))
    writer.add_scalar("loss", 1.0, 1)
    writer.close()
    assert not _resumable(events_only)
    assert not events_only.exists()  # a bundle would refuse to train over it: moved aside, kept
    (stale,) = tmp_path.glob("b_s0.stale-*")
    assert sorted(stale.glob("tokenizer/tensorboard/events.out.tfevents.*"))


def test_format_table_ratios_by_seed():
    results = {
        "std": {0: {"perplexity": 10.0, "code_distance": 0.5, "psnr": 20.0},
                1: {"perplexity": 20.0, "code_distance": 1.0, "psnr": 21.0}},
        "def": {0: {"perplexity": 30.0, "code_distance": 2.0, "psnr": 19.5},
                1: {"perplexity": 40.0, "code_distance": 1.5, "psnr": 21.0}},
    }
    table = format_table(results, baseline="std").splitlines()
    assert table[0].startswith("| arm | seed | perplexity | code_distance | psnr | perplexity ×")
    assert "| def | 0 | 30 | 2 | 19.5 | 3 | 4 | -0.5 |" in table
    assert "| def | 1 | 40 | 1.5 | 21 | 2 | 1.5 | 0 |" in table
    assert "| def | mean | 35 | 1.75 | 20.25 |  |  |  |" in table


def test_tiny_extractor_is_seeded_and_loads_as_a_generic_extractor(tmp_path):
    import torch

    from medvq.experiments.tiny_extractor import save_tiny_extractor
    from medvq.metrics import load_feature_extractor

    a = torch.jit.load(str(save_tiny_extractor(tmp_path / "a.pt", seed=0)))
    b = torch.jit.load(str(save_tiny_extractor(tmp_path / "b.pt", seed=0)))
    c = torch.jit.load(str(save_tiny_extractor(tmp_path / "c.pt", seed=1)))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    extractor = load_feature_extractor(str(tmp_path / "a.pt"), kind="generic")
    features = extractor(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert features.shape == (2, 32) and torch.isfinite(features).all()
