"""The quantizers' ``active`` flag in the state dict: a bool buffer, round trips, old checkpoints, dtype casts."""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks.utils import copy_model_state
from torch import nn

from medvq.quantizers import ACTIVE_FLAG, MultiScaleResidualQuantizer, VectorQuantizer, upgrade_state_dict

# (factory, state-dict key of the flag): the multi-scale quantizer keeps it in its inner VectorQuantizer `codes`
QUANTIZERS = [
    pytest.param(lambda active: VectorQuantizer(16, 4, active=active), "active_flag", id="vq"),
    pytest.param(lambda active: MultiScaleResidualQuantizer(num_embeddings=16, embedding_dim=4, scales=(1, 2, 4),
                                                            active=active), "codes.active_flag", id="msvq"),
]


def _old_format(state: dict, key: str, active: bool) -> dict:
    """A state dict as earlier medvq versions wrote it: the flag as extra state ``{"active": bool}``."""
    old = dict(state)
    del old[key]
    old[key.replace(ACTIVE_FLAG, "_extra_state")] = {"active": active}
    return old


def _saved(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("active", [True, False])
@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_flag_is_a_0dim_bool_buffer_in_the_state_dict(make, key, active):
    q = make(active)
    state = q.state_dict()
    assert key in state and not any(k.endswith("_extra_state") for k in state)
    assert state[key].dtype == torch.bool and state[key].shape == () and bool(state[key]) is active
    assert q.active is active and isinstance(q.active, bool)


@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_setter_writes_the_registered_buffer_in_place(make, key):
    q = make(False)
    flag = q.state_dict(keep_vars=True)[key]
    q.active = True
    assert q.active is True and q.state_dict(keep_vars=True)[key] is flag and bool(flag)  # same tensor (DDP's)
    q.active = 0
    assert q.active is False and not bool(flag)


@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_dtype_casts_leave_the_flag_a_bool(make, key):
    q = make(True)
    casts = (nn.Module.half, nn.Module.double, lambda m: m.to(torch.bfloat16), lambda m: m.to("cpu", torch.float16))
    for cast in casts:
        cast(q)
        assert q.state_dict()[key].dtype == torch.bool and q.active is True
    assert q.codebook.dtype == torch.float16  # the floating state did follow the casts


@pytest.mark.parametrize("active", [True, False])
@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_state_dict_round_trip_sets_the_flag(make, key, active):
    source, target = make(active), make(not active)
    target.load_state_dict(_saved(source.state_dict()))  # strict, weights_only
    assert target.active is active
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


@pytest.mark.parametrize("active", [True, False])
@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_old_extra_state_format_loads_strictly(make, key, active):
    source = make(active)
    old = _saved(_old_format(source.state_dict(), key, active))
    target = make(not active)
    target.load_state_dict(old)  # strict=True: neither a missing nor an unexpected key
    assert target.active is active
    assert target.state_dict()[key].dtype == torch.bool
    assert key.replace(ACTIVE_FLAG, "_extra_state") in old  # the caller's dict is not modified
    # the same under a parent module (prefixes), as in a tokenizer's "quantizer." entries
    parent, old_parent = nn.ModuleDict({"quantizer": make(not active)}), {f"quantizer.{k}": v for k, v in old.items()}
    parent.load_state_dict(old_parent)
    assert parent["quantizer"].active is active


@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_missing_flag_is_torchs_missing_key_error(make, key):
    state = make(True).state_dict()
    del state[key]
    target = make(False)
    with pytest.raises(RuntimeError, match=rf"Missing key\(s\) in state_dict: \"{key}\""):
        target.load_state_dict(state)
    result = target.load_state_dict(state, strict=False)
    assert result.missing_keys == [key] and target.active is False  # not silently defaulted to True


@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_malformed_old_flag_has_a_clear_message(make, key):
    state = _old_format(make(True).state_dict(), key, True)
    state[key.replace(ACTIVE_FLAG, "_extra_state")] = "yes"
    with pytest.raises(RuntimeError, match=r"old medvq quantizer flag \{'active': bool\}"):
        make(False).load_state_dict(state, strict=False)


@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_both_formats_at_once_is_an_unexpected_key(make, key):
    state = make(True).state_dict()
    state[key.replace(ACTIVE_FLAG, "_extra_state")] = {"active": False}
    target = make(False)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        target.load_state_dict(state)
    assert upgrade_state_dict(state).keys() == state.keys()  # the current entry wins there too


@pytest.mark.parametrize("make,key", QUANTIZERS)
def test_copy_model_state_copies_the_flag(make, key):
    source, target = make(True), make(False)
    _, updated, unchanged = copy_model_state(target, source.state_dict())
    assert key in updated and not unchanged and target.active is True
    # an old state dict goes through MONAI once upgraded (without, copy_model_state skips the old entry)
    old = _old_format(make(False).state_dict(), key, False)
    _, updated, _ = copy_model_state(target, upgrade_state_dict(old))
    assert key in updated and target.active is False


def test_upgrade_state_dict_converts_only_old_flags_and_keeps_order():
    weight = torch.zeros(2)
    old = {"a.weight": weight, "quantizer._extra_state": {"active": True}, "quantizer.codes._extra_state":
           {"active": False}, "other._extra_state": {"something": 1}, "_extra_state": {"active": True}}
    new = upgrade_state_dict(old)
    assert list(new) == ["a.weight", "quantizer.active_flag", "quantizer.codes.active_flag", "other._extra_state",
                         "active_flag"]
    assert new["a.weight"] is weight and new["other._extra_state"] == {"something": 1}
    assert new["quantizer.active_flag"].dtype == torch.bool and bool(new["quantizer.active_flag"])
    assert not bool(new["quantizer.codes.active_flag"]) and bool(new["active_flag"])
    assert "quantizer._extra_state" in old  # a copy


def test_repr_shows_the_flag():
    assert "active=False" in repr(VectorQuantizer(4, 2, active=False))
    with torch.device("meta"):
        assert "active=?" in repr(VectorQuantizer(4, 2))  # no data to read on the meta device
