"""inference_datalist keeps the requested datalist fields (the generator evaluation needs the real labels)."""

from __future__ import annotations

import json

import pytest

from medvq.inference import inference_datalist


def test_keep_keys(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"validation": [{"image": "a.png", "label": [1, 0]},
                                                   {"image": "b.png", "label": [0, 1]}]}))
    items = inference_datalist(input_datalist=datalist, keep_keys=["label"])
    assert [i["label"] for i in items] == [[1, 0], [0, 1]]
    assert items[0]["image"] == str(tmp_path / "a.png")
    assert inference_datalist(input_datalist=datalist) == [{"image": str(tmp_path / n)} for n in ("a.png", "b.png")]
    datalist.write_text(json.dumps({"validation": [{"image": "a.png"}]}))
    with pytest.raises(ValueError, match=r"item 0 \(.*a.png\) of list 'validation' .* has no \['label'\]"):
        inference_datalist(input_datalist=datalist, keep_keys=["label"])
    with pytest.raises(ValueError, match="keep_keys .* needs an input_datalist"):
        inference_datalist(input_dir=tmp_path, keep_keys=["label"])
