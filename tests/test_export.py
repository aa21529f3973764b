"""medvq.export: a traced tokenizer whose reloaded file gives the eager token indices, 2D, multi-scale and 3D."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import load_net_with_metadata

from medvq.api import load_tokenizer
from medvq.data import make_example_dataset
from medvq.export import ExportReport, export_tokenizer

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.json"
# one epoch, switched to quantization after its first iteration (a tiny network: what an export sees after training)
FAST = {"num_workers": 0, "checkpoint_every": 1000, "discriminator_start": 1000, "num_epochs": 1, "quantize_start": 1,
        "quantize_start_unit": "iterations"}


def _train(configs, workflow_type, **overrides) -> None:
    workflow = ConfigWorkflow(config_file=[str(c) for c in configs], logging_file=False,
                              meta_file=str(Path(configs[0]).parent / "metadata.json"),
                              workflow_type=workflow_type, run_id="training", **{**FAST, **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """A one-epoch odir_vq quickstart run (4 validation images)."""
    run = tmp_path_factory.mktemp("export_vq") / "run"
    _train([ROOT / "bundles" / "odir_vq" / "configs" / "train.json", QUICKSTART], "train", output_dir=str(run),
           synthetic_images=24)
    return run


@pytest.fixture(scope="module")
def var_run(tmp_path_factory):
    """A one-epoch odir_var stage-1 (multi-scale tokenizer) run: weights in <run>/tokenizer/, datalist in <run>/."""
    run = tmp_path_factory.mktemp("export_var") / "run"
    _train([ROOT / "bundles" / "odir_var" / "configs" / "train_tokenizer.json", QUICKSTART], None,
           output_dir=str(run), synthetic_images=24, image_size=32, scales=[1, 2, 4, 8])
    return run


@pytest.fixture(scope="module")
def vq3d_run(tmp_path_factory):
    """A one-epoch image_vq 3D quickstart run on MR volumes (32^3 voxels, 1 validation volume)."""
    root = tmp_path_factory.mktemp("export_3d")
    data = Path(make_example_dataset(root / "volumes", spatial_dims=3, num_variants=2)["output_dir"]) / "mr"
    _train([ROOT / "bundles" / "image_vq" / "configs" / "train.json", ROOT / "configs" / "quickstart_3d.json"],
           "train", dataset_dir=str(data), modality="mr", group_by="file", output_dir=str(root / "run"))
    return root / "run"


# (run fixture, default output below the run, one image's token shape, check batch sizes: traced with 1)
CASES = [
    ("vq_run", "model.ts", (1, 16, 16), (4,)),
    ("var_run", "tokenizer/model.ts", (1, 1 + 4 + 16 + 64), (4,)),
    ("vq3d_run", "model.ts", (1, 8, 8, 8), (1, 2)),  # a lone validation volume: repeated once as a batch of 2
]


@pytest.mark.parametrize(("run_fixture", "default", "token_shape", "batch_sizes"), CASES)
def test_export_gives_the_eager_token_indices_on_the_validation_images(run_fixture, default, token_shape,
                                                                       batch_sizes, request):
    run = request.getfixturevalue(run_fixture)
    report = export_tokenizer(run)
    assert isinstance(report, ExportReport)
    assert report.output == run / default and report.output.is_file()
    assert report.sha256 == _sha256(report.output)
    assert report.token_shape == token_shape and report.batch_sizes == batch_sizes and report.mismatches == 0
    assert not list(report.output.parent.glob(".*.tmp"))  # the temporary file became model.ts
    # independently: the eager tokenizer on the datalist's validation images, the reloaded file on the same tensors
    paths = [item["image"] for item in json.loads((run / "datalist.json").read_text())["validation"]]
    tokenizer = load_tokenizer(run, device="cpu")
    images = tokenizer.preprocess(paths)
    assert report.input_shape == tuple(images.shape[1:])
    eager = tokenizer.encode(images)
    exported = torch.jit.load(str(report.output))
    assert isinstance(exported, torch.jit.ScriptModule)
    with torch.no_grad():
        tokens = exported(images)
        one_by_one = torch.cat([exported(image[None]) for image in images])
    assert tokens.dtype == torch.int64 and tuple(tokens.shape) == (len(paths), *token_shape)
    assert torch.equal(tokens[:, 0], eager) and torch.equal(one_by_one, tokens)
    assert report.images_checked == len(paths)
    assert report.tokens_compared == sum(batch_sizes) * eager[0].numel()
    # MONAI's metadata: run_info and the weights' sha256 travel inside the file
    _, meta, _ = load_net_with_metadata(str(report.output))
    assert meta["run_info"] == tokenizer.settings and meta["checkpoint_sha256"] == _sha256(tokenizer.checkpoint)
    assert meta["inputs"]["image"]["shape"] == [-1, *report.input_shape] and "MONAI" in meta


def test_the_exported_file_runs_without_medvq(vq_run, tmp_path):
    report = export_tokenizer(vq_run, tmp_path / "alone.ts")
    code = ("import sys; sys.modules['medvq'] = None; import torch; "  # any import of medvq now fails
            f"m = torch.jit.load({str(report.output)!r}); print(tuple(m(torch.zeros(2, 3, 64, 64)).shape))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 1, 16, 16)"


def test_an_existing_file_is_never_replaced_silently(vq_run, tmp_path):
    target = tmp_path / "model.ts"
    target.write_bytes(b"finished artifact")
    with pytest.raises(FileExistsError, match=r"'.*model\.ts' exists: .* Pass overwrite=True"):
        export_tokenizer(vq_run, target)
    assert target.read_bytes() == b"finished artifact"
    report = export_tokenizer(vq_run, target, overwrite=True)
    assert report.sha256 == _sha256(target) and target.read_bytes() != b"finished artifact"


def test_a_bundle_folder_writes_models_model_ts_and_needs_check_images(vq_run, tmp_path):
    models = tmp_path / "bundle" / "models"  # what --publish_model True leaves: models/model.pt + models/model.json
    models.mkdir(parents=True)
    shutil.copy(vq_run / "checkpoints" / "model_final.pt", models / "model.pt")
    shutil.copy(vq_run / "run_info.json", models / "model.json")
    with pytest.raises(FileNotFoundError, match="no datalist.json of the training found .* give check_images"):
        export_tokenizer(tmp_path / "bundle")
    images = [item["image"] for item in json.loads((vq_run / "datalist.json").read_text())["validation"]]
    report = export_tokenizer(tmp_path / "bundle", check_images=images[:3], batch_size=2)
    assert report.output == models / "model.ts" and report.batch_sizes == (2, 1) and report.images_checked == 3


def test_a_token_mismatch_raises_with_counts_and_writes_nothing(vq_run, tmp_path, monkeypatch):
    load = torch.jit.load

    class OffByOne(torch.nn.Module):  # the reloaded file, one token of the first image changed
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            tokens = self.module(x).clone()
            tokens[0, 0, 0, 0] += 1
            return tokens

    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: OffByOne(load(*args, **kwargs)))
    with pytest.raises(RuntimeError, match=r"1 of 1024 tokens in 1 of 4 images \(batch sizes \[4\], traced with 1\)"):
        export_tokenizer(vq_run, tmp_path / "model.ts")
    assert list(tmp_path.iterdir()) == []  # neither model.ts nor its temporary file


def test_a_network_that_cannot_be_traced_is_named(vq_run, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.jit, "trace", fail)
    with pytest.raises(RuntimeError, match=r"tracing the 2D vqgan_tiny tokenizer of .* failed \(RuntimeError: "
                                           r"unsupported operator\); medvq exports by torch.jit.trace only"):
        export_tokenizer(vq_run, tmp_path / "model.ts")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_and_missing_weights_are_named(vq_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer weights in"):
        export_tokenizer(tmp_path / "empty")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        export_tokenizer(vq_run, tmp_path / "a.ts", batch_size=0)
    with pytest.raises(ValueError, match="check_images is empty"):
        export_tokenizer(vq_run, tmp_path / "a.ts", check_images=[])
    with pytest.raises(TypeError, match="overwrite must be a bool"):
        export_tokenizer(vq_run, tmp_path / "a.ts", overwrite="yes")
    assert not (tmp_path / "a.ts").exists()
