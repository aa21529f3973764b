"""The MONAI model zoo's own checks, run offline on the bundles after a quickstart training (issue 11).

What ``ci/verify_bundle.py`` of Project-MONAI/model-zoo runs, as far as it works without a network: the metadata
against the bundle schema, ``verify_net_in_out`` on ``network_def`` of ``configs/inference.json`` (the zoo builds it
from that file alone), ``ckpt_export`` of ``models/model.pt`` to TorchScript, ``torch.jit.load`` of the result; plus
the property checks of MONAI's ``ConfigWorkflow`` for the train and infer workflows, and ``monai.bundle.load`` of the
exported module. In the zoo's unit-test style the bundle trains first (one epoch, tiny overrides), then infers.

The bundle folder is copied to a temporary ``bundle_root`` so the published weights never land in the repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.json")
SCHEMA = Path(__file__).with_name("meta_schema.json")


def _schema_without_optional_packages(tmp_path: Path) -> Path:
    """MONAI's bundle schema 20220324 (the one available offline) minus its requirement of
    ``optional_packages_version``: the zoo's current schema (20240725, named in the bundles' metadata) no longer needs
    it (the zoo's own bundles, e.g. brats_mri_generative_diffusion, carry only ``required_packages_version``), and
    MONAI 1.6 treats the key as a deprecated name that *replaces* the required list."""
    schema = json.loads(SCHEMA.read_text())
    schema["required"] = [key for key in schema["required"] if key != "optional_packages_version"]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    return path


@pytest.mark.parametrize("bundle", ["odir_vq", "odir_var", "image_vq", "image_var", "imagenet100_vq", "imagenet100_var"])
def test_metadata_passes_the_schema_with_a_name_and_without_duplicated_packages(tmp_path, bundle):
    from monai.bundle import verify_metadata

    meta_file = ROOT / "bundles" / bundle / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(_schema_without_optional_packages(tmp_path)))
    meta = json.loads(meta_file.read_text())
    assert meta["name"] and meta["schema"].endswith("meta_schema_20240725.json")
    assert "optional_packages_version" not in meta
    assert meta["version"] in meta["changelog"]


def _train_and_publish(base: Path, name: str, train_config: str) -> tuple[Path, Path]:
    """Copy bundles/<name> to ``base``, train it one quickstart epoch there with ``--publish_model True``; the train
    workflow's property check must be empty. Returns the bundle copy and the run folder."""
    bundle = base / name
    shutil.copytree(ROOT / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models"))
    configs = bundle / "configs"
    trainer = ConfigWorkflow(
        config_file=[str(configs / train_config), QUICKSTART], meta_file=str(configs / "metadata.json"),
        logging_file=False, workflow_type="train", bundle_root=str(bundle), output_dir=str(base / "run"),
        synthetic_images=24, num_epochs=1, quantize_start=None, checkpoint_every=1000, num_workers=0,
        publish_model=True,
    )
    trainer.initialize()
    assert trainer.check_properties() in (None, [])
    trainer.run()
    trainer.finalize()
    final = next((base / "run").glob("**/checkpoints/model_final.pt"))
    assert (bundle / "models" / "model.pt").read_bytes() == final.read_bytes()
    # the run's settings travel with the weights: inference reads the preprocessing and channels from models/model.json
    assert (bundle / "models" / "model.json").read_bytes() == (final.parent.parent / "run_info.json").read_bytes()
    record = json.loads((bundle / "models" / "model.json").read_text())
    assert record["preprocessing"]["modality"] == "fundus" and record["channels"] == 3
    return bundle, base / "run"


def _infer_and_check(bundle: Path, run: Path) -> torch.nn.Module:
    """Run the bundle's standalone inference.json (quickstart sizes) on the run's validation split with the published
    weights, after checking the infer workflow's properties; returns the network it built."""
    configs = bundle / "configs"
    inferrer = ConfigWorkflow(
        config_file=[str(configs / "inference.json"), QUICKSTART], meta_file=str(configs / "metadata.json"),
        logging_file=False, workflow_type="infer", bundle_root=str(bundle), output_dir=str(run),
        checkpoint=str(bundle / "models" / "model.pt"), input_datalist=str(run / "datalist.json"),
        inference_output_dir=str(run / "inference"),
    )
    inferrer.initialize()
    assert inferrer.check_properties() in (None, [])  # bundle_root, device, dataset_dir, dataset, evaluator, ...
    inferrer.run()
    network = inferrer.parser.get_parsed_content("network")
    inferrer.finalize()
    return network


@pytest.fixture(scope="module")
def odir_vq(tmp_path_factory):
    """A copy of bundles/odir_vq whose models/model.pt is a one-epoch quickstart tokenizer (published by training)."""
    return _train_and_publish(tmp_path_factory.mktemp("zoo"), "odir_vq", "train.json")


def test_infer_workflow_properties_and_the_zoo_network_check(odir_vq):
    from monai.bundle import verify_net_in_out

    bundle, run = odir_vq
    configs = bundle / "configs"
    _infer_and_check(bundle, run)
    assert json.loads((run / "inference" / "tokens.json").read_text())["items"]
    # the zoo builds network_def from inference.json alone (paper size) and checks it against the metadata
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), bundle_root=str(bundle), device="cpu")


def test_ckpt_export_by_trace_gives_the_eager_token_maps_and_loads_with_monai_bundle_load(odir_vq):
    from monai.bundle import ConfigParser, ckpt_export, load

    from medvq.inference import load_tokenizer_checkpoint
    from medvq.transforms import fundus_preprocessing

    bundle, run = odir_vq
    configs = bundle / "configs"
    config_files = [str(configs / "inference.json"), QUICKSTART]
    ckpt_export(net_id="network_def", filepath=str(bundle / "models" / "model.ts"),
                ckpt_file=str(bundle / "models" / "model.pt"), meta_file=str(configs / "metadata.json"),
                config_file=config_files, bundle_root=str(bundle), use_trace=True, input_shape=[1, 3, 64, 64])
    scripted, meta, _extra = load(name="odir_vq", bundle_dir=str(bundle.parent), load_ts_module=True, device="cpu")
    assert meta["name"] == json.loads((configs / "metadata.json").read_text())["name"]
    # eager: the same network from the same configs, weights from models/model.pt
    parser = ConfigParser()
    parser.read_config(config_files)
    parser["bundle_root"] = str(bundle)
    network = load_tokenizer_checkpoint(parser.get_parsed_content("network_def"), bundle / "models" / "model.pt")
    validation = json.loads((run / "datalist.json").read_text())["validation"]
    preprocessing = fundus_preprocessing(image_size=64, train=False)
    images = torch.stack([preprocessing({"image": item["image"]})["image"].as_tensor() for item in validation])
    with torch.no_grad():
        exported, eager = scripted(images), network(images)
    assert exported.dtype == torch.int64 and exported.shape == (len(validation), 1, 16, 16)
    assert torch.equal(exported, eager)
    assert torch.equal(eager[:, 0], network.encode_to_indices(images))


@pytest.fixture(scope="module")
def odir_var(tmp_path_factory):
    """A copy of bundles/odir_var whose models/model.pt is a one-epoch quickstart stage-1 tokenizer."""
    return _train_and_publish(tmp_path_factory.mktemp("zoo_var"), "odir_var", "train_tokenizer.json")


def test_odir_var_inference_stands_alone_and_exports_its_token_sequences(odir_var):
    from monai.bundle import ckpt_export, load, verify_net_in_out

    bundle, run = odir_var
    configs = bundle / "configs"
    config_files = [str(configs / "inference.json"), QUICKSTART]
    network = _infer_and_check(bundle, run)
    items = json.loads((run / "inference" / "tokens.json").read_text())["items"]
    length = sum(network.quantizer.scale_lengths)
    assert items and all(item["token_grid"] == [length] for item in items)
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), bundle_root=str(bundle), device="cpu")
    ckpt_export(net_id="network_def", filepath=str(bundle / "models" / "model.ts"),
                ckpt_file=str(bundle / "models" / "model.pt"), meta_file=str(configs / "metadata.json"),
                config_file=config_files, bundle_root=str(bundle), use_trace=True, input_shape=[1, 3, 64, 64])
    scripted, _, _ = load(name="odir_var", bundle_dir=str(bundle.parent), load_ts_module=True, device="cpu")
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(scripted(images), network(images))
    assert network(images).shape == (3, 1, length)


def test_bundle_files_pass_the_zoo_pre_commit_format():
    """The model zoo's pre-commit hooks: JSON as ``pretty-format-json --indent=4 --no-sort-keys`` writes it (ASCII,
    4 spaces, a final newline), no trailing whitespace, every text file ending in exactly one newline."""
    files = sorted(p for folder in ("bundles", "configs") for p in (ROOT / folder).rglob("*")
                   if p.is_file() and p.suffix in (".json", ".md", ".txt", ".conf", ".yml", ".yaml")
                   or p.is_file() and p.name == "LICENSE")
    assert files
    bad = []
    for path in files:
        text = path.read_text()
        if not text.endswith("\n") or text.endswith("\n\n") or any(line != line.rstrip() for line in text.splitlines()):
            bad.append(f"{path.relative_to(ROOT)}: trailing whitespace or final newline")
        if path.suffix == ".json" and text != json.dumps(json.loads(text), indent=4) + "\n":
            bad.append(f"{path.relative_to(ROOT)}: not formatted as pretty-format-json --indent=4 --no-sort-keys")
    assert not bad, "\n".join(bad)
