"""VARTransformer, sample_var, filter_logits and the VAR presets: shapes, errors, block causality, KV cache parity,
guidance, condition dropout, multi-label embeddings, hand-computed filtering, a memorisation run, 2D and 3D."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medvq.networks import (
    VAR_PRESETS,
    VAR_SCALE_LENGTHS,
    VARTransformer,
    filter_logits,
    sample_var,
    var_d16,
    var_tiny,
)
from medvq.quantizers import MultiScaleResidualQuantizer

V, D, C = 16, 4, 3  # codebook size, code dimension, number of labels
# (spatial_dims, scales): 2D and 3D schedules from one parameter list
CASES = [(2, (1, 2, 3, 4)), (3, (1, 2, 3))]


def _quantizer(spatial_dims=2, scales=(1, 2, 3, 4), dtype=torch.float64):
    torch.manual_seed(0)
    quantizer = MultiScaleResidualQuantizer(num_embeddings=V, embedding_dim=D, scales=scales,
                                            spatial_dims=spatial_dims, phi_shared=2)
    return quantizer.to(dtype)


def _var(quantizer, generic=True, dtype=torch.float64, **kwargs):
    """A small model; ``generic`` replaces VAR's near-identity init by O(1) random weights, so every path matters."""
    torch.manual_seed(1)
    kwargs = {"width": 32, "depth": 2, "num_heads": 2, **kwargs}
    var = VARTransformer(num_embeddings=V, embedding_dim=D, scale_lengths=quantizer.scale_lengths, num_conditions=C,
                         **kwargs).to(dtype)
    if generic:
        with torch.no_grad():
            for p in var.parameters():
                p.normal_(0.0, 0.3)
    return var.eval()


def _tokens(quantizer, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (batch, *s), generator=generator) for s in quantizer.scales]


def _conditions(dtype=torch.float64):
    return torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=dtype)  # multi-label, then single-label


def _same_maps(a, b):
    return len(a) == len(b) and all(x.equal(y) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_shapes(spatial_dims, scales):
    quantizer = _quantizer(spatial_dims, scales)
    var = _var(quantizer)
    lengths = quantizer.scale_lengths
    total = sum(lengths)
    assert var.sequence_length == total and var.num_scales == len(scales)
    assert var.num_parameters == sum(p.numel() for p in var.parameters())
    x = quantizer.teacher_forcing_input(_tokens(quantizer))  # (B, L - n_0, D)
    assert x.shape == (2, total - 1, D)
    assert var(x, _conditions()).shape == (2, total, V)
    assert var(x, None).shape == (2, total, V)
    # every scale-aligned prefix, down to the first scale alone
    for k in range(len(lengths)):
        end = sum(lengths[: k + 1])
        assert var(x[:, : end - 1], _conditions()).shape == (2, end, V)
    with var.kv_cache():
        assert var.forward_step(None, var.embed_condition(_conditions()), 0).shape == (2, 1, V)
    maps = sample_var(var, quantizer, _conditions(), guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert [tuple(m.shape) for m in maps] == [(2, *s) for s in quantizer.scales]
    assert all(m.dtype == torch.int64 for m in maps)
    assert quantizer.indices_to_latent(maps).shape == (2, D, *quantizer.scales[-1])
    # the masks are rebuilt from the constructor arguments, not saved
    assert "attn_mask" not in var.state_dict() and "level_index" not in var.state_dict()


def test_block_causal_mask_by_hand():
    quantizer = _quantizer(scales=(1, 2))  # lengths 1, 4
    var = _var(quantizer)
    expected = torch.tensor([[1, 0, 0, 0, 0]] + [[1, 1, 1, 1, 1]] * 4, dtype=torch.bool)
    assert var.attn_mask.equal(expected)
    assert var.level_index.tolist() == [0, 1, 1, 1, 1]


def test_presets():
    tiny = var_tiny()
    assert (tiny.width, tiny.depth, tiny.num_heads) == (64, 2, 2)
    assert tiny.scale_lengths == (1, 4, 9, 16, 36, 64) and tiny.num_embeddings == 256 and tiny.embedding_dim == 8
    with torch.device("meta"):  # no memory, no init cost: only the architecture
        d16 = var_d16()
    assert (d16.width, d16.depth, d16.num_heads) == (1024, 16, 16)
    assert d16.scale_lengths == VAR_SCALE_LENGTHS and sum(VAR_SCALE_LENGTHS) == 680
    assert 305e6 < d16.num_parameters < 315e6  # VAR-d16: 310 M
    assert VAR_PRESETS == {"var_d16": var_d16, "var_tiny": var_tiny}


def test_init_starts_blocks_near_identity():
    quantizer = _quantizer()
    var = _var(quantizer, generic=False, dtype=torch.float32)
    assert var.init_std == pytest.approx(math.sqrt(1 / 32 / 3))
    for block in var.blocks:
        gates = block.ada_lin[-1].weight[: 2 * var.width]
        assert gates.abs().max() < 1e-4 * var.init_std * 3
    x = quantizer.teacher_forcing_input(_tokens(quantizer)).float()
    logits = var(x, _conditions(torch.float32))
    assert logits.abs().max() < 0.1  # small head: near-uniform first predictions


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_embeddings": 0}, "num_embeddings must be an integer >= 1, got 0"),
        ({"embedding_dim": 2.0}, "embedding_dim must be an integer >= 1, got 2.0"),
        ({"scale_lengths": ()}, r"scale_lengths must be a non-empty sequence of ints >= 1, got \(\)"),
        ({"scale_lengths": (1, 0)}, r"scale_lengths must be a non-empty sequence of ints >= 1, got \(1, 0\)"),
        ({"num_conditions": 0}, "num_conditions must be an integer >= 1, got 0"),
        ({"width": 30}, r"width \(30\) must be divisible by num_heads \(4\)"),
        ({"depth": 0}, "depth must be an integer >= 1, got 0"),
        ({"num_heads": True}, "num_heads must be an integer >= 1, got True"),
        ({"mlp_ratio": 0.0}, "mlp_ratio must be > 0, got 0.0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"condition_dropout": 1.5}, r"condition_dropout must be in \[0, 1\], got 1.5"),
        ({"norm_eps": 0.0}, "norm_eps must be > 0, got 0.0"),
        ({"init_std": -1.0}, "init_std must be > 0 or None"),
    ],
)
def test_constructor_errors(kwargs, message):
    arguments = {"num_embeddings": V, "embedding_dim": D, "scale_lengths": (1, 4), "num_conditions": C, "width": 32,
                 "depth": 1, "num_heads": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        VARTransformer(**arguments)


def test_forward_errors():
    quantizer = _quantizer(scales=(1, 2, 3))  # lengths 1, 4, 9: x of length 0, 4 or 13
    var = _var(quantizer)
    x = quantizer.teacher_forcing_input(_tokens(quantizer))
    cond = _conditions()
    with pytest.raises(TypeError, match=r"x must be a floating torch.Tensor \(B, L - n_0, D\), got torch.int64"):
        var(x.long(), cond)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L - n_0, embedding_dim\) = \(B, 13, 4\), or a "
                                         r"prefix ending at a scale boundary \(second axis in \[0, 4, 13\]\), got "
                                         r"\(2, 5, 4\)"):
        var(x[:, :5], cond)
    with pytest.raises(ValueError, match=r"got \(2, 13, 3\)"):
        var(x[..., :3], cond)
    with pytest.raises(ValueError, match=r"condition must have shape \(B, num_conditions=3\) or be None, got "
                                         r"\(2, 2\)"):
        var(x, cond[:, :2])
    with pytest.raises(ValueError, match=r"condition's batch size \(1\) must equal x's \(2\)"):
        var(x, cond[:1])
    with pytest.raises(ValueError, match=r"batch_size is required when condition is None"):
        var.embed_condition(None)
    with pytest.raises(ValueError, match=r"batch_size \(3\) must equal condition's batch size \(2\)"):
        var.embed_condition(cond, batch_size=3)
    with pytest.raises(ValueError, match=r"drop must be a bool tensor of shape \(2,\)"):
        var.embed_condition(cond, drop=torch.ones(2))
    with pytest.raises(ValueError, match=r"condition_embedding must have shape \(B, width\) = \(2, 32\), got "
                                         r"\(2, 31\)"):
        var.forward_from_embedding(x, torch.zeros(2, 31, dtype=x.dtype))


def test_kv_cache_errors():
    quantizer = _quantizer(scales=(1, 2, 3))
    var = _var(quantizer)
    x = quantizer.teacher_forcing_input(_tokens(quantizer))
    embedding = var.embed_condition(_conditions())
    with pytest.raises(RuntimeError, match=r"forward_step must be called inside `with var.kv_cache\(\):`"):
        var.forward_step(None, embedding, 0)
    with var.kv_cache():
        with pytest.raises(RuntimeError, match=r"kv_cache\(\) is already active; it does not nest"), var.kv_cache():
            pass
        with pytest.raises(RuntimeError, match="forward would overwrite the KV cache"):
            var(x, _conditions())
        with pytest.raises(ValueError, match=r"scale_index must be 0 \(the next scale of this cache\), got 1"):
            var.forward_step(x[:, :4], embedding, 1)
        with pytest.raises(ValueError, match="x must be None at scale_index 0"):
            var.forward_step(x[:, :4], embedding, 0)
        var.forward_step(None, embedding, 0)
        with pytest.raises(ValueError, match=r"x must have shape \(B, n_k, D\) = \(B, 4, 4\) at scale 1, got "
                                             r"\(2, 9, 4\)"):
            var.forward_step(x[:, 4:], embedding, 1)
        var.forward_step(x[:, :4], embedding, 1)
        var.forward_step(x[:, 4:], embedding, 2)
        with pytest.raises(ValueError, match=r"scale_index must be 3 \(the next scale of this cache\), got 4"):
            var.forward_step(x[:, 4:], embedding, 4)
        with pytest.raises(ValueError, match=r"scale_index must be < num_scales \(3\), got 3"):
            var.forward_step(x[:, 4:], embedding, 3)
    # leaving the context empties the cache and allows forward again
    assert all(block.attn._keys is None and not block.attn.caching for block in var.blocks)
    var(x, _conditions())


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"guidance": -0.5}, ValueError, "guidance must be a finite number >= 0"),
        ({"guidance_ramp": "cosine"}, ValueError, r"guidance_ramp must be one of \('constant', 'linear'\)"),
        ({"top_k": -1}, ValueError, "top_k must be an integer >= 0"),
        ({"top_p": 1.5}, ValueError, r"top_p must be in \[0, 1\]"),
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0, got 0.0"),
        ({"condition": None}, ValueError, r"num_samples is required when condition is None"),
        ({"num_samples": 3}, ValueError, r"num_samples \(3\) must equal condition's batch size \(2\)"),
        ({"condition": torch.ones(2, 4)}, ValueError,
         r"condition must have shape \(B, num_conditions=3\) or be None, got \(2, 4\)"),
        ({"var": "model"}, TypeError, "var must be a VARTransformer, got str"),
        ({"quantizer": MultiScaleResidualQuantizer(V, D, scales=(1, 2, 4))}, ValueError,
         r"quantizer.scale_lengths \(1, 4, 16\) must equal var.scale_lengths \(1, 4, 9\)"),
        ({"quantizer": MultiScaleResidualQuantizer(V, 5, scales=(1, 2, 3))}, ValueError,
         r"quantizer.embedding_dim \(5\) must equal var.embedding_dim \(4\)"),
        ({"quantizer": MultiScaleResidualQuantizer(8, D, scales=(1, 2, 3))}, ValueError,
         r"quantizer.num_embeddings \(8\) must equal var.num_embeddings \(16\)"),
    ],
)
def test_sample_var_errors(kwargs, error, message):
    quantizer = _quantizer(scales=(1, 2, 3))
    arguments = {"var": _var(quantizer), "quantizer": quantizer, "condition": _conditions(), **kwargs}
    with pytest.raises(error, match=message):
        sample_var(**arguments)


# ---------------------------------------------------------------------------------------------------- causality
@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_logits_depend_only_on_inputs_of_earlier_and_same_scales(spatial_dims, scales):
    quantizer = _quantizer(spatial_dims, scales)
    var = _var(quantizer)
    x = quantizer.teacher_forcing_input(_tokens(quantizer))
    cond = _conditions()
    logits = var(x, cond)
    ends = var.scale_begins[1:]  # scale k ends at ends[k]; x holds positions 1..L-1, so x[:, j - 1] is position j
    for k in range(var.num_scales - 1):
        perturbed = x.clone()
        perturbed[:, ends[k] - 1 :] += torch.randn_like(perturbed[:, ends[k] - 1 :])  # inputs of scales > k
        changed = var(perturbed, cond)
        assert changed[:, : ends[k]].equal(logits[:, : ends[k]])  # exactly: masked keys weigh 0
        # every later position moves (each sees its own perturbed input)
        assert (changed[:, ends[k] :] - logits[:, ends[k] :]).abs().amax(dim=-1).min() > 1e-6


@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_kv_cache_steps_equal_the_masked_forward(spatial_dims, scales):
    quantizer = _quantizer(spatial_dims, scales)
    var = _var(quantizer)
    x = quantizer.teacher_forcing_input(_tokens(quantizer))
    embedding = var.embed_condition(_conditions())
    full = var.forward_from_embedding(x, embedding)
    begins = var.scale_begins
    with var.kv_cache():
        steps = [var.forward_step(None, embedding, 0)]
        for k in range(1, var.num_scales):
            steps.append(var.forward_step(x[:, begins[k] - 1 : begins[k + 1] - 1], embedding, k))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("spatial_dims,scales", CASES)
@pytest.mark.parametrize(
    "condition,guidance,ramp,top_k,top_p,temperature",
    [
        ("labels", 1.0, "linear", 0, 0.0, 1.0),
        ("labels", 3.0, "linear", 5, 0.0, 1.0),
        ("labels", 2.0, "constant", 0, 0.9, 0.7),
        (None, 1.0, "linear", 4, 0.8, 1.5),
    ],
)
def test_cached_sampling_equals_uncached(spatial_dims, scales, condition, guidance, ramp, top_k, top_p, temperature):
    quantizer = _quantizer(spatial_dims, scales)
    var = _var(quantizer)
    cond = _conditions() if condition == "labels" else None

    def draw(use_kv_cache):
        return sample_var(var, quantizer, cond, num_samples=2, guidance=guidance, guidance_ramp=ramp, top_k=top_k,
                          top_p=top_p, temperature=temperature, use_kv_cache=use_kv_cache,
                          generator=torch.Generator().manual_seed(7))

    cached = draw(True)
    assert _same_maps(cached, draw(False))
    assert _same_maps(cached, draw(True))  # and the cache leaves nothing behind
    assert not _same_maps(cached, sample_var(var, quantizer, cond, num_samples=2, guidance=guidance,
                                             guidance_ramp=ramp, top_k=top_k, top_p=top_p, temperature=temperature,
                                             generator=torch.Generator().manual_seed(8)))


def test_sampling_restores_the_mode():
    quantizer = _quantizer()
    var = _var(quantizer).train()
    sample_var(var, quantizer, _conditions(), generator=torch.Generator().manual_seed(0))
    assert var.training
    var.eval()
    sample_var(var, quantizer, _conditions(), generator=torch.Generator().manual_seed(0))
    assert not var.training


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_guidance_zero_is_unconditional(use_kv_cache):
    quantizer = _quantizer()
    var = _var(quantizer)
    guided = sample_var(var, quantizer, _conditions(), guidance=0.0, guidance_ramp="constant",
                        use_kv_cache=use_kv_cache, generator=torch.Generator().manual_seed(3))
    unconditional = sample_var(var, quantizer, None, num_samples=2, use_kv_cache=use_kv_cache,
                               generator=torch.Generator().manual_seed(3))
    conditional = sample_var(var, quantizer, _conditions(), guidance=1.0, use_kv_cache=use_kv_cache,
                             generator=torch.Generator().manual_seed(3))
    assert _same_maps(guided, unconditional)
    assert not _same_maps(conditional, unconditional)


@pytest.mark.parametrize("guidance,ramp", [(1.0, "constant"), (1.0, "linear"), (2.5, "linear"), (0.5, "constant")])
def test_greedy_sampling_follows_the_guided_teacher_forced_logits(guidance, ramp):
    """With top_k=1 each sampled token is the argmax of ``l_u + w_k (l_c - l_u)`` of the teacher-forced logits of the
    sampled sequence itself: checks the CFG formula, the ramp and the whole sampling chain against ``forward``."""
    quantizer = _quantizer()
    var = _var(quantizer)
    cond = _conditions()
    maps = sample_var(var, quantizer, cond, guidance=guidance, guidance_ramp=ramp, top_k=1)
    x = quantizer.teacher_forcing_input(maps)
    l_cond, l_uncond = var(x, cond), var(x, None)
    last = var.num_scales - 1
    weights = [guidance if ramp == "constant" else 1 + (guidance - 1) * k / last for k in range(var.num_scales)]
    if guidance == 1.0:
        assert weights == [1.0] * var.num_scales
    tokens = quantizer.flatten_indices(maps)  # (B, L)
    begins = var.scale_begins
    for k, w in enumerate(weights):
        sl = slice(begins[k], begins[k + 1])
        guided = l_uncond[:, sl] + w * (l_cond[:, sl] - l_uncond[:, sl])
        assert guided.argmax(dim=-1).equal(tokens[:, sl])


# ---------------------------------------------------------------------------------------------------- conditions
def test_condition_dropout():
    quantizer = _quantizer()
    var = _var(quantizer, condition_dropout=1.0)
    x = quantizer.teacher_forcing_input(_tokens(quantizer))
    cond = _conditions()
    null = var(x, None)
    var.train()  # dropout 0: only the condition dropout is random
    assert var(x, cond).equal(null)
    var.eval()
    eval_logits = var(x, cond)
    assert eval_logits.equal(var.forward_from_embedding(x, var.embed_condition(cond)))
    assert not eval_logits.equal(null)
    var.condition_dropout = 0.0
    var.train()
    assert var(x, cond).equal(eval_logits)


def test_multi_label_embedding_is_the_sum_of_label_embeddings():
    var = _var(_quantizer())
    table = var.label_embedding.detach()
    cond = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    embedding = var.embed_condition(cond)
    torch.testing.assert_close(embedding[0], table[0] + table[2])
    torch.testing.assert_close(embedding[1], table[1])
    torch.testing.assert_close(embedding[2], torch.zeros_like(table[0]))  # no label is not the null embedding
    torch.testing.assert_close(embedding[3], 0.5 * table[0])
    # integer multi-hot (F.one_hot) works the same
    torch.testing.assert_close(var.embed_condition(F.one_hot(torch.tensor([2]), C)), table[2:3])
    drop = torch.tensor([True, False, False, True])
    dropped = var.embed_condition(cond, drop=drop)
    torch.testing.assert_close(dropped[0], var.null_embedding.detach())
    torch.testing.assert_close(dropped[1], table[1])
    torch.testing.assert_close(var.embed_condition(None, batch_size=2), var.null_embedding.detach().expand(2, -1))


# ---------------------------------------------------------------------------------------------------- filtering
def test_filter_logits_by_hand():
    inf = math.inf
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assert filter_logits(logits, top_k=2).tolist() == [-inf, 3.0, 2.0, -inf]
    assert filter_logits(logits, top_k=1).tolist() == [-inf, 3.0, -inf, -inf]
    assert filter_logits(logits).equal(logits) and filter_logits(logits, top_k=4).equal(logits)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)  # logits = log(probs)
    log = probs.log()

    def kept(out):
        return torch.isfinite(out).nonzero().flatten().tolist()

    assert kept(filter_logits(log, top_p=0.01)) == [0]  # at least one token
    assert kept(filter_logits(log, top_p=0.45)) == [0]
    assert kept(filter_logits(log, top_p=0.6)) == [0, 1]  # 0.5 < 0.6 <= 0.5 + 0.3
    assert kept(filter_logits(log, top_p=0.83)) == [0, 1, 2]
    assert kept(filter_logits(log, top_p=1.0)) == [0, 1, 2, 3]
    # top-k first, then top-p on the renormalised rest: 0.5 / 0.95 + 0.3 / 0.95 = 0.842 >= 0.83
    assert kept(filter_logits(log, top_k=3, top_p=0.83)) == [0, 1]
    # the order of the vocabulary does not matter, leading axes are batch axes
    shuffled = log[[2, 0, 3, 1]]
    assert kept(filter_logits(shuffled, top_p=0.6)) == [1, 3]
    batch = torch.stack([log, log.flip(0)]).view(2, 1, 4)
    out = filter_logits(batch, top_p=0.6)
    assert out.shape == (2, 1, 4) and torch.isfinite(out).sum().item() == 4
    assert torch.isfinite(out[1, 0]).tolist() == [False, False, True, True]
    assert filter_logits(log, top_p=0.6)[:2].equal(log[:2])  # kept logits are untouched
    with pytest.raises(ValueError, match="top_k must be an integer >= 0"):
        filter_logits(logits, top_k=-1)
    with pytest.raises(ValueError, match=r"top_p must be in \[0, 1\]"):
        filter_logits(logits, top_p=-0.1)


# ---------------------------------------------------------------------------------------------------- learning
def test_memorises_one_sequence_per_condition():
    torch.manual_seed(0)
    quantizer = MultiScaleResidualQuantizer(num_embeddings=V, embedding_dim=D, scales=(1, 2, 3), phi_shared=2)
    quantizer.requires_grad_(False)
    var = var_tiny(num_embeddings=V, embedding_dim=D, scale_lengths=quantizer.scale_lengths, num_conditions=2,
                   condition_dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    maps = [torch.randint(0, V, (2, *s), generator=generator) for s in quantizer.scales]  # one sequence per label
    targets = quantizer.flatten_indices(maps)  # (2, 14)
    x = quantizer.teacher_forcing_input(maps)  # (2, 13, D)
    cond = torch.eye(2)
    optimizer = torch.optim.AdamW(var.parameters(), lr=3e-3, weight_decay=0.0)
    var.train()
    losses = []
    for _ in range(100):
        loss = F.cross_entropy(var(x, cond).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # about log(16) = 2.77 from the near-uniform init
    assert losses[-1] < 0.1 * losses[0]
    # four samples per label: the sampled tokens are mostly the memorised ones
    sampled = sample_var(var, quantizer, cond.repeat_interleave(4, dim=0), generator=torch.Generator().manual_seed(0))
    match = quantizer.flatten_indices(sampled).eq(targets.repeat_interleave(4, dim=0)).float().mean()
    assert match > 0.9


# ---------------------------------------------------------------------------------------------------- VAR fidelity
def _var_filter_params(model):
    """VAR's utils/lr_control.py filter_params with train.py's nowd_keys, written from the published rule, mapped to
    this module's names: no decay for 1-D parameters, names ending in 'bias', and names containing a nowd key."""
    nowd_keys = {"cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start",
                 "start_pos", "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul",
                 # medvq's names of VAR's pos_start, pos_1LC, lvl_embed, scale_mul_1H11, cfg_uncond
                 "start_position", "position_embedding", "level_embedding", "null_embedding"}
    no_decay = set()
    for name, p in model.named_parameters():
        if p.ndim == 1 or name.endswith("bias") or any(k in name for k in nowd_keys):
            no_decay.add(name)
    return no_decay


def test_parameter_groups_follow_var():
    var = var_tiny()
    groups = var.parameter_groups(0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert set(groups[1]["param_names"]) == _var_filter_params(var)
    assert set(groups[0]["param_names"]) | set(groups[1]["param_names"]) == {n for n, _ in var.named_parameters()}
    # the embeddings and the attention temperature are exempt; the label embedding (VAR's class_emb) is decayed
    assert {"start_position", "position_embedding", "level_embedding.weight", "null_embedding",
            "blocks.0.attn.scale_mul_log"} <= set(groups[1]["param_names"])
    assert "label_embedding" in groups[0]["param_names"]
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    with torch.device("meta"):
        d16 = var_d16()
    sizes = [len(g["params"]) for g in d16.parameter_groups(0.05)]
    assert sizes == [84, 119]  # 7 exempt tensors per block (q/v biases, temperature, 4 biases) + 7 outside
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        var.parameter_groups(-1.0)


def test_init_std_is_vars_untruncated():
    # VAR: trunc_normal_(std=init_std) with torch's default absolute bounds +-2, i.e. no truncation at std ~0.02
    torch.manual_seed(0)
    var = VARTransformer(num_embeddings=16, embedding_dim=4, scale_lengths=(1, 4), num_conditions=2, width=256,
                         depth=1, num_heads=4)
    std = math.sqrt(1 / 256 / 3)
    for weight in (var.blocks[0].attn.qkv.weight, var.word_embedding.weight, var.position_embedding):
        assert float(weight.detach().std()) == pytest.approx(std, rel=0.03)  # +-2 std bounds would give 0.88 std


def test_key_bias_is_fixed_at_zero_and_old_checkpoints_load():
    torch.manual_seed(0)
    var = VARTransformer(num_embeddings=16, embedding_dim=4, scale_lengths=(1, 4), num_conditions=2, width=32,
                         depth=1, num_heads=2)
    attn = var.blocks[0].attn
    assert attn.qkv.bias is None and "zero_k_bias" not in var.state_dict()
    names = {n for n, _ in var.named_parameters()}
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias"} <= names
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 4, 4)
    cond = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    var.eval()
    expected = var(x, cond)
    # the output is that of a fused qkv with bias (q_bias, 0, v_bias)
    state = var.state_dict()
    fused = torch.cat([state.pop("blocks.0.attn.q_bias"), torch.full((32,), 3.0), state.pop("blocks.0.attn.v_bias")])
    state["blocks.0.attn.qkv.bias"] = fused  # a checkpoint written before the q/v split, with a key bias
    old = VARTransformer(num_embeddings=16, embedding_dim=4, scale_lengths=(1, 4), num_conditions=2, width=32,
                         depth=1, num_heads=2)
    old.load_state_dict(state)  # the key part is dropped (VAR fixes it at 0), q and v are kept
    old.eval()
    torch.testing.assert_close(old(x, cond), expected)
