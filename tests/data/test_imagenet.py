"""ImageNet-100 datalists from an ImageNet-shaped tree of JPEGs (both val layouts), and VAR's preprocessing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvq.data import IMAGENET100, IMAGENET100_WNIDS, build_imagenet100_datalist, make_imagenet100_tree
from medvq.transforms import natural_preprocessing

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "imagenet100.tsv"


def test_the_class_list_is_the_cmc_list_in_its_order_with_sorted_labels():
    assert len(IMAGENET100) == 100 and len(set(IMAGENET100_WNIDS)) == 100
    assert list(IMAGENET100_WNIDS) == sorted(w for w, _, _ in IMAGENET100)
    if REFERENCE.is_file():  # the project's reference copy, when the checkout has it
        with open(REFERENCE, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        assert [(r["wnid"], int(r["imagenet1k_index"]), r["name"]) for r in rows] == list(IMAGENET100)
        assert all(IMAGENET100_WNIDS[int(r["sorted100_index"])] == r["wnid"] for r in rows)


@pytest.mark.parametrize("layout", ["folders", "flat"])
def test_both_val_layouts_give_the_same_lists(tmp_path, layout):
    root = make_imagenet100_tree(tmp_path / "tree", val_layout=layout)
    (root / "train" / "n99999999").mkdir()  # a class outside the 100 is ignored
    Image.new("RGB", (20, 20)).save(root / "train" / "n99999999" / "x.JPEG")
    result = build_imagenet100_datalist(root, output_dir=tmp_path / "out")
    assert (len(result.train), len(result.val)) == (200, 100)
    assert result.val_layout == ("folders" if layout == "folders" else "LOC_val_solution.csv")
    assert all(IMAGENET100_WNIDS[item["label"]] == item["wnid"] == Path(item["image"]).parent.name
               for item in result.train)
    assert sorted(item["label"] for item in result.val) == list(range(100))
    written = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert written["numTraining"] == 200 and written["labels"]["0"] == IMAGENET100_WNIDS[0]


def test_missing_classes_are_named_and_unreadable_files_listed(tmp_path):
    root = make_imagenet100_tree(tmp_path / "tree", train_per_class=2)
    gone = IMAGENET100_WNIDS[5]
    shutil.rmtree(root / "train" / gone)
    with pytest.raises(ValueError, match=rf"1 of the 100 ImageNet-100 classes have no folder.*{gone}"):
        build_imagenet100_datalist(root)
    root = make_imagenet100_tree(tmp_path / "tree2")
    broken = root / "train" / IMAGENET100_WNIDS[0] / "broken.JPEG"
    broken.write_bytes(b"not a jpeg")
    result = build_imagenet100_datalist(root, output_dir=tmp_path / "out")
    assert [s["file"] for s in result.skipped] == [str(broken)] and len(result.train) == 200
    with open(tmp_path / "out" / "skipped_images.csv", newline="") as f:
        assert [row["file"] for row in csv.DictReader(f)] == [str(broken)]
    flat = make_imagenet100_tree(tmp_path / "tree3", val_layout="flat")
    (flat / "LOC_val_solution.csv").unlink()
    with pytest.raises(FileNotFoundError, match="LOC_val_solution.csv"):
        build_imagenet100_datalist(flat)


@pytest.mark.parametrize("width", [218, 222])  # resized widths 109 and 111: W - S = 45 and 47, where torchvision's
def test_natural_preprocessing_is_vars_resize_and_crop(tmp_path, width):  # round((W - S) / 2) = 22, 24 (MONAI: 22, 23)
    """VAR: Resize(round(1.125 * S), LANCZOS) on the PIL image, CenterCrop(S) (evaluation), x * 2 - 1."""
    rng = np.random.default_rng(0)
    size, short = 64, 72
    pixels = rng.integers(0, 256, (144, width, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"  # lossless, so the decoded pixels are the ones written
    Image.fromarray(pixels).save(path)
    # the reference, written from the formulas: PIL resize of the shorter side, torchvision's centre crop rounding
    pil = Image.open(path).convert("RGB")
    w, h = pil.size
    scale = short / min(w, h)
    pil = pil.resize((short, round(h * scale)) if w < h else (round(w * scale), short), Image.Resampling.LANCZOS)
    ref = np.asarray(pil, dtype=np.float32)
    assert ref.shape[1] - size in (45, 47)
    top, left = round((ref.shape[0] - size) / 2), round((ref.shape[1] - size) / 2)
    ref = np.moveaxis(ref[top:top + size, left:left + size], -1, 0) / 255 * 2 - 1
    out = natural_preprocessing(image_size=size, train=False)({"image": str(path), "label": 7})
    np.testing.assert_allclose(out["image"].numpy(), ref, atol=1e-6)
    assert int(out["label"]) == 7
    train = natural_preprocessing(image_size=size, train=True)({"image": str(path)})["image"]
    assert train.shape == (3, size, size) and -1 <= float(train.min()) and float(train.max()) <= 1
    with pytest.raises(ValueError, match="resize_ratio must be a number >= 1"):
        natural_preprocessing(resize_ratio=0.5)


def test_tokenizer_datalists_reads_an_imagenet_tree_or_a_datalist_of_its_images(tmp_path):
    from medvq.data import tokenizer_datalists

    root = make_imagenet100_tree(tmp_path / "tree")
    split = tokenizer_datalists(root, tmp_path / "a", data_format="imagenet100")
    assert (len(split.train), len(split.val), split.channels) == (200, 100, 3)
    assert split.class_names == list(IMAGENET100_WNIDS)
    # a datalist of the same photographs with class-index labels: checked, split by the seed, labels kept
    items = [{"image": str(Path(i["image"]).relative_to(root)), "label": i["label"]} for i in split.train]
    (root / "list.json").write_text(json.dumps({"training": items}))
    listed = tokenizer_datalists(None, tmp_path / "b", datalist=root / "list.json", data_format="imagenet100",
                                 val_fraction=0.1)
    assert len(listed.train) + len(listed.val) == 200 and listed.val and listed.channels == 3
    assert {i["label"] for i in listed.train} <= set(range(100))
    with pytest.raises(FileNotFoundError, match="pass --dataset_dir <ImageNet-1k root>"):
        tokenizer_datalists(None, tmp_path / "c", data_format="imagenet100")
