"""Smoke run of ``benchmarks/train_step.py --smoke`` (2 iterations, 1 timed epoch, 1 round, tiny sizes), in-process:
both halves print a header and every variant's line with its rate and its ratio to the hand-written loop. Checks the
report's shape, never the timings."""

from __future__ import annotations

import logging
import re

import pytest
from conftest import load_benchmark

RATIO = r"\s+\d+\.\d{3}x the hand-written loop$"
TOKENIZER_ROWS = ("hand-written loop", "TokenizerTrainer (no handlers)", "TokenizerTrainer + bundle handlers")
VAR_ROWS = ("hand-written loop", "SupervisedTrainer (clip + lr handlers)", "SupervisedTrainer + bundle handlers")


@pytest.fixture(scope="module")
def train_step():
    return load_benchmark("train_step")


def _rows(lines: list[str], unit_pattern: str) -> list[str]:
    """Variant names of the report lines that carry a rate in ``unit_pattern`` and a ratio."""
    pattern = re.compile(rf"^  (\S.*?)\s+{unit_pattern}{RATIO}")
    return [m.group(1) for m in map(pattern.match, lines) if m]


def test_smoke_prints_every_variant_and_its_ratio_for_both_halves(train_step, capsys):
    disabled = logging.root.manager.disable
    lines = train_step.main(["--smoke", "--device", "cpu"])
    assert capsys.readouterr().out.splitlines() == lines
    assert logging.root.manager.disable == disabled  # main restores the logging it silenced
    assert len(lines) == 8
    assert lines[0] == "vqgan_tiny, 32 px, batch 2, 2 iterations per epoch, cpu, " + lines[0].split("cpu, ")[1]
    assert lines[0].endswith("threads; median of 1 epochs")
    assert _rows(lines, r"\d+\.\d img/s") == list(TOKENIZER_ROWS)
    assert lines[4].startswith("var_tiny, 21 tokens (scales 1 2 4), batch 2, 2 iterations per epoch, cpu, ")
    assert lines[4].endswith("threads; median of 1 epochs")
    assert _rows(lines, r"\d+ tokens/s\s+\d+\.\d{2} steps/s") == list(VAR_ROWS)
    assert re.search(r" 1\.000x the hand-written loop$", lines[1]) and re.search(r" 1\.000x", lines[5])


def test_model_option_runs_one_half(train_step, capsys):
    lines = train_step.main(["--smoke", "--device", "cpu", "--model", "var", "--scales", "1", "2"])
    capsys.readouterr()
    assert lines[0].startswith("var_tiny, 5 tokens (scales 1 2), batch 2, ")
    assert _rows(lines, r"\d+ tokens/s\s+\d+\.\d{2} steps/s") == list(VAR_ROWS) and len(lines) == 4
