"""Tokenizer state dicts with MONAI's tools: ``copy_model_state``, ``monai.bundle.load``, old checkpoints, tracing."""

from __future__ import annotations

import io
import warnings

import monai.bundle
import pytest
import torch
from monai.networks.utils import copy_model_state
from torch import nn

from medvq.inference.inputs import load_tokenizer_checkpoint
from medvq.networks import msvqgan_tiny, vqgan_tiny
from medvq.quantizers import upgrade_state_dict

# (preset, state-dict key of the quantizer's active flag)
PRESETS = [
    pytest.param(vqgan_tiny, "quantizer.active_flag", id="vqgan_tiny"),
    pytest.param(msvqgan_tiny, "quantizer.codes.active_flag", id="msvqgan_tiny"),
]


def _net(preset, quantize, seed=0):
    torch.manual_seed(seed)
    return preset(num_embeddings=16, quantize=quantize)


def _old_format(state, key, active):
    """A state dict as earlier medvq versions wrote it: the flag as extra state ``{"active": bool}``."""
    old = {k: v for k, v in state.items() if k != key}
    old[key.replace("active_flag", "_extra_state")] = {"active": active}
    return old


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("preset,key", PRESETS)
def test_copy_model_state_copies_every_entry_and_the_flag(preset, key):
    source, target = _net(preset, True, seed=1), _net(preset, False, seed=2)
    _, updated, unchanged = copy_model_state(target, source.state_dict())
    assert key in updated and unchanged == []
    assert target.quantizer.active is True
    _assert_same_state(target, source)


@pytest.mark.parametrize("preset,key", PRESETS)
def test_monai_bundle_load_from_a_local_bundle_folder(preset, key, tmp_path):
    source = _net(preset, True, seed=1)
    (tmp_path / "tok" / "models").mkdir(parents=True)
    torch.save(source.state_dict(), tmp_path / "tok" / "models" / "model.pt")
    target = monai.bundle.load(name="tok", model=_net(preset, False, seed=2), bundle_dir=str(tmp_path), device="cpu")
    assert target.quantizer.active is True
    _assert_same_state(target, source)


@pytest.mark.parametrize("active", [True, False])
@pytest.mark.parametrize("preset,key", PRESETS)
def test_old_checkpoints_load_with_their_flag(preset, key, active, tmp_path):
    source = _net(preset, active, seed=1)
    old = _old_format(source.state_dict(), key, active)
    # model_final.pt (the bare state dict) and checkpoint_<N>.pt (its "network" entry), as training wrote them
    torch.save(old, tmp_path / "model_final.pt")
    torch.save({"network": old, "trainer": {"iteration": 3}}, tmp_path / "checkpoint_3.pt")
    for name in ("model_final.pt", "checkpoint_3.pt"):
        target = _net(preset, not active, seed=2)
        load_tokenizer_checkpoint(target, tmp_path / name)  # strict
        assert target.quantizer.active is active, name
        _assert_same_state(target, source)
    # MONAI's key matching skips the old entry; upgraded first, it copies it
    target = _net(preset, not active, seed=2)
    copy_model_state(target, old)
    assert target.quantizer.active is not active
    _, updated, _ = copy_model_state(target, upgrade_state_dict(old))
    assert key in updated and target.quantizer.active is active


class _Indices(nn.Module):
    """``encode_to_indices`` as a forward, a tuple of token maps (what a traced tokenizer export returns)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        indices = self.net.encode_to_indices(x)
        return tuple(indices) if isinstance(indices, list) else (indices,)


@pytest.mark.parametrize("preset,key", PRESETS)
def test_jit_trace_of_encode_to_indices_matches_eager(preset, key):
    wrapper = _Indices(_net(preset, True)).eval()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(batch, 3, 32, 32, generator=generator) * 2 - 1 for batch in (2, 3)]
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings (input checks, the active flag's branch, baked in) and torch.jit's deprecation
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, images[0])
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    assert bool(loaded.state_dict()[f"net.{key}"])  # the flag travels as a buffer of the exported module
    for x in images:
        with torch.no_grad():
            expected, got = wrapper(x), loaded(x)
        assert len(got) == len(expected)
        for e, g in zip(expected, got):
            assert g.dtype == torch.int64 and torch.equal(g, e)
