"""medvq.experiments.codebook_scaling: arms per (schedule, size), and a real two-size study end to end."""

from __future__ import annotations

import json

import pytest

from medvq.experiments.codebook_scaling import COLUMNS, format_per_seed, main, scaling_arms
from medvq.experiments.tokenizer_study import parse_arm


def test_arms_name_schedule_and_size_and_give_kmeans_two_latents_a_code():
    arms = scaling_arms([64, 8192], ["standard", "deferred"], [("dataset_dir", "/data")])
    assert [a.name for a in arms] == ["standard_k64", "standard_k8192", "deferred_k64", "deferred_k8192"]
    assert arms[0].overlays[0].endswith("configs/schedules/standard.json")
    assert arms[0].overrides == (("num_embeddings", "64"), ("dataset_dir", "/data"))
    assert ("quantize_num_samples", "16384") in arms[1].overrides  # 2 K above the quickstart's 8192
    with pytest.raises(ValueError, match="unknown schedule 'early'"):
        scaling_arms([64], ["early"])
    with pytest.raises(ValueError, match="codebook sizes must be integers >= 2"):
        scaling_arms([1])


def test_a_json_valued_override_is_not_taken_for_an_overlay(tmp_path):
    arm = parse_arm("a=datalist=list.json+modality=mr")
    assert arm.overlays == () and arm.overrides == (("datalist", "list.json"), ("modality", "mr"))


def test_two_sizes_two_schedules_train_and_print_the_table_and_plot(tmp_path, capsys):
    tiny = ["synthetic_images=24", "num_epochs=2", "discriminator_start=1000", "checkpoint_every=1000",
            "quantize_num_samples=512", "num_workers=0"]
    code = main(["--sizes", "16", "32", "--schedules", "standard", "deferred", "--output", str(tmp_path / "runs"),
                 "--plot", str(tmp_path / "scaling.png"), "--json", str(tmp_path / "scaling.json"),
                 *[arg for item in tiny for arg in ("--set", item)]])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| K | usage (standard) | usage (deferred) |") and "\n| 32 |" in printed
    table = json.loads((tmp_path / "scaling.json").read_text())
    assert set(table) == {"standard", "deferred"} and set(table["deferred"]) == {"16", "32"}
    assert set(table["deferred"]["16"]) == set(COLUMNS)
    assert all(0 < table[s][k]["usage"] <= 1 for s in table for k in table[s])
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "runs" / "deferred_k32_s0" / "checkpoints" / "model_final.pt").is_file()
    with pytest.raises(SystemExit):
        main(["--set", "no_equals"])


def test_per_seed_table_gives_each_seed_and_the_spread():
    results = {"standard_k16": {0: {"perplexity": 4.0, "code_distance": 0.1, "psnr": 20.0},
                                1: {"perplexity": 6.0, "code_distance": 0.2, "psnr": 21.5}},
               "deferred_k16": {0: {"perplexity": 12.0, "code_distance": 1.0, "psnr": 22.0}}}
    lines = format_per_seed(results, [16], ["standard", "deferred"]).splitlines()
    assert lines[0] == ("| K | schedule | perplexity (s0 / s1) | code_distance (s0 / s1) | psnr (s0 / s1) | "
                        "perplexity max/min |")
    assert lines[2] == "| 16 | standard | 4 / 6 | 0.1 / 0.2 | 20 / 21.5 | 1.50 |"
    assert lines[3] == "| 16 | deferred | 12 / - | 1 / - | 22 / - | - |"  # a seed not run shows as "-"
