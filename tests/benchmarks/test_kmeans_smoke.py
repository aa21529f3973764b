"""benchmarks/kmeans.py at a small size (K above one code block, and the worker split's threshold lowered, so every
variant takes its own path): every medvq search variant runs and all give the same k-means (the same inertia: the
searches agree); the load the benchmark starts itself is one busy process each, gone after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, load_benchmark

SCRIPT = ROOT / "benchmarks" / "kmeans.py"


def test_smoke_runs_every_search_with_the_same_result():
    out = subprocess.run([sys.executable, str(SCRIPT), "--n", "4096", "--k", "2304", "--iterations", "1",
                          "--baselines", "--load", "0",
                          "--worker_min_pairs", "1"], capture_output=True, text=True, timeout=300, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    medvq = [r for r in rows if r["contender"].startswith("medvq")]
    assert {(r["contender"], r["busy_processes"]) for r in medvq} == {
        (name, 0) for name in ("medvq", "medvq-one-team", "medvq-one-pass")}
    assert len({r["inertia"] for r in medvq}) == 1  # every search variant found the same clusters
    assert "0 busy processes: medvq / medvq-one-team time = " in out.stdout
    if any(r["contender"] == "faiss" for r in rows):
        assert "time medvq/faiss = " in out.stdout and "inertia medvq/faiss = " in out.stdout


def test_the_competing_load_runs_one_busy_process_each_and_stops_them():
    module = load_benchmark("kmeans")
    before = set(_spinners())
    with module.competing_load(2):
        assert len(set(_spinners()) - before) == 2
    assert set(_spinners()) - before == set()


def _spinners() -> list[str]:
    """Processes running the benchmark's busy loop (read from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"while True: pass" in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:  # the process ended while we looked
            continue
    return found
