"""A run folder is never lost or overwritten: finished runs stay, killed runs resume, retention holds, TensorBoard
shows each step once, and checkpoint errors name the file (issue 10, items 1-3, 8, 11-13).

The kill cases SIGKILL a real ``python -m monai.bundle run training`` process in the middle of a file write
(``crash_run.py``); the resumes run in-process through ``ConfigWorkflow``. odir_vq quickstart sizes: 24 generated
images, 21 for training, batch 8 with drop_last: 2 iterations per epoch.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from medvq.utils.checkpoints import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "odir_vq"
TRAIN = str(BUNDLE / "configs" / "train.json")
QUICKSTART = str(ROOT / "configs" / "quickstart.json")
SETTINGS = {"synthetic_images": 24, "num_epochs": 2, "quantize_start": 1, "discriminator_start": 3,
            "checkpoint_every": 2, "num_workers": 0}


def _workflow(output_dir: Path, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=[TRAIN, QUICKSTART], meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=False,
        workflow_type="train", run_id="training", output_dir=str(output_dir), **{**SETTINGS, **overrides},
    )
    workflow.initialize()
    return workflow


def _train(output_dir: Path, **overrides):
    workflow = _workflow(output_dir, **overrides)
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    workflow.finalize()
    return trainer


def _root_cause(error: BaseException) -> BaseException:
    """The medvq error under MONAI's wrapping (MONAI re-raises errors of config expressions as RuntimeError)."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for item in chain:
        if isinstance(item, (CheckpointError, FileExistsError, FileNotFoundError)):
            return item
    return chain[-1]


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _checkpoints(folder: Path) -> list[str]:
    return sorted((p.name for p in (folder / "checkpoints").glob("checkpoint_*.pt")),
                  key=lambda name: int(re.findall(r"\d+", name)[0]))


def _steps(run: Path) -> dict[str, list[int]]:
    """Every scalar tag's steps as TensorBoard shows them: the whole folder loaded at once, so the purge event a
    resumed run writes hides what the killed run logged after its checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    steps = {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    steps.update({tag: [e.step for e in acc.Images(tag)] for tag in acc.Tags()["images"]})
    return steps


def _crash_run(output_dir: Path, mode: str, n: int = 0, **overrides) -> subprocess.CompletedProcess:
    args = {**SETTINGS, **overrides}
    cmd = [sys.executable, str(Path(__file__).with_name("crash_run.py")), mode, str(n), "--", "run", "training",
           "--config_file", str([TRAIN, QUICKSTART]), "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
           "--logging_file", str(BUNDLE / "configs" / "logging.conf"), "--output_dir", str(output_dir)]
    for key, value in args.items():
        cmd += [f"--{key}", str(value)]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          check=False, timeout=600)


def test_a_finished_run_stays_as_it_is_and_trains_further_only_when_num_epochs_is_raised(tmp_path):
    run = tmp_path / "run"
    first = _train(run)
    assert first.state.iteration == 4 and _checkpoints(run) == ["checkpoint_2.pt", "checkpoint_4.pt"]
    before = _files(run / "checkpoints")

    # 1. --resume_from latest on the finished run: nothing trained, no file of the run rewritten
    again = _train(run, resume_from="latest")
    assert again.state.run_finished and again.state.iteration == 4
    assert _files(run / "checkpoints") == before

    # 2. a fresh start into the finished run's folder is refused before any data is read (a dataset_dir that does
    #    not exist would fail the datalist otherwise), naming the folder and both ways on
    with pytest.raises(Exception) as info:
        _workflow(run, dataset_dir=str(tmp_path / "no_such_odir"))
    error = _root_cause(info.value)
    assert isinstance(error, FileExistsError), error
    assert str(run) in str(error) and "--resume_from latest" in str(error) and "--output_dir" in str(error)
    assert "finished" in str(error) and _files(run / "checkpoints") == before

    # 3. num_epochs raised: trains epoch 3 from iteration 4 on, under new names only; the old files are not rewritten
    further = _train(run, resume_from="latest", num_epochs=3)
    assert not getattr(further.state, "run_finished", False) and further.state.iteration == 6
    assert not hasattr(further.state, "deferred_switch")  # switched once, in the first run
    after = _files(run / "checkpoints")
    assert _checkpoints(run) == ["checkpoint_4.pt", "checkpoint_6.pt"]  # retention: the newest two
    assert after["checkpoint_4.pt"] == before["checkpoint_4.pt"]
    assert after["model_final.pt"] != before["model_final.pt"]


def test_resuming_from_an_older_checkpoint_than_the_newest_is_refused(tmp_path):
    run = tmp_path / "run"
    _train(run, checkpoint_every=1, num_epochs=1, quantize_start=0)  # checkpoints 1 and 2 kept
    before = _files(run / "checkpoints")
    with pytest.raises(Exception) as info:
        _workflow(run, checkpoint_every=1, num_epochs=1, quantize_start=0,
                  resume_from=str(run / "checkpoints" / "checkpoint_1.pt"))
    error = _root_cause(info.value)
    assert isinstance(error, FileExistsError) and "checkpoint_2.pt" in str(error) and "latest" in str(error)
    assert _files(run / "checkpoints") == before


def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path):
    """Killed while writing checkpoint_6 (iterations 5 and 6 already logged): the resume removes the half-written
    temporary file, continues from checkpoint_4, keeps the newest two checkpoints and shows every step once."""
    run = tmp_path / "run"
    killed = _crash_run(run, "checkpoint", 3, num_epochs=4)
    assert killed.returncode == -9, killed.stderr[-3000:]
    # the start logged the command that resumes this run
    assert re.search(r"continue it with: python -m monai\.bundle run training .*--resume_from latest",
                     killed.stdout + killed.stderr)
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    temporaries = [n for n in left if n.startswith("tmp")]
    assert _checkpoints(run) == ["checkpoint_2.pt", "checkpoint_4.pt"] and len(temporaries) == 1, left
    assert max(_steps(run)["train/loss"]) >= 5  # the killed run logged steps after its last checkpoint

    workflow = _workflow(run, resume_from="latest", num_epochs=4)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 4
    assert not (run / "checkpoints" / temporaries[0]).exists()  # removed at the start
    workflow.run()
    workflow.finalize()
    assert trainer.state.iteration == 8
    assert _checkpoints(run) == ["checkpoint_6.pt", "checkpoint_8.pt"]  # retention across the kill
    assert (run / "checkpoints" / "model_final.pt").is_file()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith("tmp")]
    steps = _steps(run)
    assert steps["train/loss"] == list(range(1, 9))  # each iteration once, although 5 (and 6) were logged twice
    # epoch-level values sit at the iteration that ends their epoch, once each
    assert steps["val/usage"] == [2, 4, 6, 8] and steps["val/reconstructions"] == [2, 4, 6, 8]


def test_sigkill_while_model_final_is_written_then_resume_writes_only_the_final_model(tmp_path):
    run = tmp_path / "run"
    killed = _crash_run(run, "final")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (run / "checkpoints" / "model_final.pt.tmp").is_file()
    assert not (run / "checkpoints" / "model_final.pt").exists()
    before = _files(run / "checkpoints")
    assert sorted(before) == ["checkpoint_2.pt", "checkpoint_4.pt", "model_final.pt.tmp"]

    trainer = _train(run, resume_from="latest")
    assert trainer.state.run_finished and trainer.state.iteration == 4  # nothing retrained
    after = _files(run / "checkpoints")
    assert sorted(after) == ["checkpoint_2.pt", "checkpoint_4.pt", "model_final.pt"]
    assert after["checkpoint_4.pt"] == before["checkpoint_4.pt"]
    final = torch.load(run / "checkpoints" / "model_final.pt", weights_only=True)
    saved = torch.load(run / "checkpoints" / "checkpoint_4.pt", weights_only=True)["network"]
    assert final.keys() == saved.keys()
    assert all(torch.equal(final[k], saved[k]) for k in final if isinstance(final[k], torch.Tensor))


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_checkpoint_names_the_file_and_what_to_do(tmp_path, damage):
    run = tmp_path / "run"
    _train(run, num_epochs=1, quantize_start=0)
    bad = tmp_path / "bad.pt"
    data = (run / "checkpoints" / "checkpoint_2.pt").read_bytes()
    bad.write_bytes(b"" if damage == "empty" else data[: len(data) // 3])
    message = "is empty (0 bytes)" if damage == "empty" else "is truncated or not a torch file"
    # resume
    with pytest.raises(Exception) as info:
        _workflow(tmp_path / "other", resume_from=str(bad))
    error = _root_cause(info.value)
    assert type(error).__name__ == "CheckpointError" and str(bad) in str(error) and message in str(error), error
    assert "--resume_from" in str(error)
    # inference and evaluation load through medvq.inference.load_tokenizer_checkpoint
    from medvq.inference import load_tokenizer_checkpoint
    from medvq.networks import vqgan_tiny

    with pytest.raises(CheckpointError, match=re.escape(str(bad)) + ".*" + re.escape(message) + ".*--checkpoint"):
        load_tokenizer_checkpoint(vqgan_tiny(num_embeddings=256, embedding_dim=8), bad)


def test_a_checkpoint_of_other_sizes_to_resume_from_names_the_file_and_the_overrides(tmp_path):
    run = tmp_path / "run"
    _train(run, num_epochs=1, quantize_start=0)
    with pytest.raises(Exception) as info:
        _workflow(tmp_path / "other", resume_from=str(run / "checkpoints" / "checkpoint_2.pt"), num_embeddings=512)
    error = _root_cause(info.value)
    text = str(error)
    assert type(error).__name__ == "CheckpointError" and "checkpoint_2.pt" in text
    assert "does not fit" in text and "num_embeddings" in text and "same config files and overrides" in text


def test_a_run_stopped_before_its_first_checkpoint_is_not_trained_over(tmp_path):
    run = tmp_path / "run"
    # a completed epoch writes its final checkpoint...
    _train(run, num_epochs=1, quantize_start=0, checkpoint_every=1000)
    for path in (run / "checkpoints").iterdir():  # ...a run killed before that leaves TensorBoard events only
        path.unlink()
    with pytest.raises(Exception) as info:
        _workflow(run)
    error = _root_cause(info.value)
    assert isinstance(error, FileExistsError) and "before its first checkpoint" in str(error)
    with pytest.raises(Exception) as info:
        _workflow(run, resume_from="latest")
    assert "no checkpoint_<iteration>.pt" in str(_root_cause(info.value))


def _mount_tmpfs(folder: Path, size: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          check=False)
    return done.returncode == 0


def test_a_full_disk_while_checkpointing_says_so_and_keeps_the_previous_checkpoint(tmp_path):
    """A real full disk: a tmpfs sized for one checkpoint (and a half) under the run's checkpoints/ folder."""
    sized = tmp_path / "sized"
    _train(sized, num_epochs=1, quantize_start=0, checkpoint_every=1)
    size = (sized / "checkpoints" / "checkpoint_1.pt").stat().st_size  # with the optimizers' moments
    run = tmp_path / "run"
    if not _mount_tmpfs(run / "checkpoints", int(size * 1.5)):
        pytest.skip("mounting a tmpfs needs root; see test_a_file_size_limit_while_checkpointing_says_so")
    workflow = _workflow(run, num_epochs=2, checkpoint_every=1)
    try:
        with pytest.raises(Exception) as info:
            workflow.run()
        error = _root_cause(info.value)
        text = str(error)
        assert text.startswith("no space left on " + str(run / "checkpoints")), text
        assert "checkpoint_1.pt" in text and "is intact" in text and "--resume_from latest" in text
        assert _checkpoints(run) == ["checkpoint_1.pt"]
        state = torch.load(run / "checkpoints" / "checkpoint_1.pt", weights_only=True)  # complete, loadable
        assert state["trainer"]["iteration"] == 1
        assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith("tmp")]
    finally:
        workflow.finalize()
        subprocess.run(["umount", str(run / "checkpoints")], capture_output=True, check=False)


def test_a_file_size_limit_while_checkpointing_says_so(tmp_path):
    """The same failure without root: a real ``ulimit -f`` (RLIMIT_FSIZE) in a bundle run of its own."""
    run = tmp_path / "run"
    limit = 1_500_000  # bytes: the tiny bundle's checkpoint is ~3 MB, its other files are smaller
    cmd = (f"import resource, signal, sys, runpy; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
           "sys.argv = ['monai.bundle'] + sys.argv[1:]; runpy.run_module('monai.bundle', run_name='__main__', "
           "alter_sys=True)")
    args = ["run", "training", "--config_file", str([TRAIN, QUICKSTART]), "--output_dir", str(run),
            "--meta_file", str(BUNDLE / "configs" / "metadata.json"), "--logging_file", "False"]
    for key, value in {**SETTINGS, "num_epochs": 1, "quantize_start": 0}.items():
        args += [f"--{key}", str(value)]
    done = subprocess.run([sys.executable, "-c", cmd, *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode != 0
    assert re.search(r"checkpoint_2\.pt hit the file-size limit while being written to .*checkpoints", done.stderr), \
        done.stderr[-3000:]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith("tmp")]


def test_publishing_never_replaces_an_existing_models_file(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(b"someone's weights")
    with pytest.raises(Exception) as info:
        _workflow(tmp_path / "run", bundle_root=str(bundle), publish_model=True)
    error = _root_cause(info.value)
    assert isinstance(error, FileExistsError) and str(bundle / "models" / "model.pt") in str(error)
    assert (bundle / "models" / "model.pt").read_bytes() == b"someone's weights"
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
