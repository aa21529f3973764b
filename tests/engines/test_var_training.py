"""Stage 2 on MONAI's SupervisedTrainer: VARPrepareBatch, NextScaleLoss, TokenAccuracy and GradientClipHandler on a
real (tiny) tokenizer; the generator learns per-condition token sequences."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from medvq.engines import VARPrepareBatch, condition_matrix
from medvq.handlers import GradientClipHandler
from medvq.losses import NextScaleLoss
from medvq.metrics import TokenAccuracy
from medvq.networks import msvqgan_tiny, var_tiny, vqgan_tiny

SCALES = (1, 2, 4)


def _tokenizer():
    torch.manual_seed(0)
    tokenizer = msvqgan_tiny(scales=SCALES, num_embeddings=16, embedding_dim=4)
    tokenizer.eval()
    return tokenizer


def _data(tokenizer, n=8):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    label = torch.zeros(n, 8)
    label[torch.arange(n), torch.arange(n) % 2] = 1.0  # two conditions, N and D
    tokens = tokenizer.quantizer.flatten_indices(tokenizer.encode_to_indices(images))
    return images, label, tokens


def test_prepare_batch_from_images_equals_from_tokens_and_errors():
    tokenizer = _tokenizer()
    images, label, tokens = _data(tokenizer)
    prepare = VARPrepareBatch(tokenizer)
    assert not any(p.requires_grad for p in tokenizer.parameters())  # frozen
    x1, t1, (c1,), kw = prepare({"image": images, "label": label})
    x2, t2, _, _ = prepare({"tokens": tokens, "label": label})
    assert torch.equal(t1, t2) and torch.equal(c1, label) and kw == {}
    torch.testing.assert_close(x1, x2)
    assert x1.shape == (8, 4 + 16, 4)
    with pytest.raises(KeyError, match="neither 'tokens'.*nor 'image'"):
        prepare({"label": label})
    with pytest.raises(KeyError, match="no condition 'label'"):
        prepare({"tokens": tokens})
    with pytest.raises(ValueError, match="EnsureTyped"):
        prepare({"tokens": tokens, "label": list(label.T)})
    with pytest.raises(ValueError, match=r"tokens must be \(B, 21\)"):
        prepare({"tokens": tokens[:, :20], "label": label})
    with pytest.raises(TypeError, match="multi-scale tokenizer"):
        VARPrepareBatch(vqgan_tiny())


def test_class_index_conditions_are_one_hot_and_one_class_needs_no_label():
    tokenizer = _tokenizer()
    _, _, tokens = _data(tokenizer)
    classes = torch.tensor([0, 2, 1, 2, 0, 1, 1, 0])
    prepare = VARPrepareBatch(tokenizer, num_conditions=3)
    _, _, (condition,), _ = prepare({"tokens": tokens, "label": classes})
    assert torch.equal(condition, torch.eye(3)[classes])
    # tokenize_datalist stores labels as float32: integral floats are class indices too
    assert torch.equal(condition_matrix(classes.float(), 3), condition)
    # (B, C) vectors pass as they are, whatever num_conditions says
    assert torch.equal(condition_matrix(torch.eye(3)[classes], 3), torch.eye(3)[classes])
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        prepare({"tokens": tokens, "label": classes + 1})
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        condition_matrix(torch.tensor([0.5, 1.0]), 3)
    with pytest.raises(ValueError, match=r"\(B, num_conditions\) tensor, got Tensor\(8,\)"):
        VARPrepareBatch(tokenizer)({"tokens": tokens, "label": classes})  # indices need num_conditions
    _, _, (single,), _ = VARPrepareBatch(tokenizer, num_conditions=1)({"tokens": tokens})
    assert torch.equal(single, torch.ones(8, 1))
    with pytest.raises(ValueError, match="num_conditions must be None or an integer >= 1"):
        VARPrepareBatch(tokenizer, num_conditions=0)


def test_next_scale_loss_is_the_mean_cross_entropy():
    logits = torch.randn(2, 3, 5)
    tokens = torch.tensor([[0, 1, 2], [3, 4, 0]])
    by_hand = -torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).mean()
    torch.testing.assert_close(NextScaleLoss()(logits, tokens), by_hand)
    with pytest.raises(ValueError, match=r"logits must be \(B, L, V\)"):
        NextScaleLoss()(logits, tokens[:, :2])
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        NextScaleLoss(label_smoothing=1.0)


def test_token_accuracy_per_scale_by_hand():
    metric = TokenAccuracy([1, 2], prefix="t_")
    logits = torch.zeros(2, 3, 4)
    logits[0, 0, 1] = logits[0, 1, 2] = logits[0, 2, 3] = 1  # predicts [1, 2, 3]
    logits[1, 0, 0] = logits[1, 1, 2] = logits[1, 2, 0] = 1  # predicts [0, 2, 0]
    metric.update((logits, torch.tensor([[1, 2, 0], [1, 2, 0]])))
    result = metric.compute()
    assert result == {"t_token_acc": 4 / 6, "t_token_acc_s0": 1 / 2, "t_token_acc_s1": 3 / 4}
    with pytest.raises(ValueError, match="L = 3"):
        metric.update((torch.zeros(1, 4, 4), torch.zeros(1, 4, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"scale_lengths must be positive token counts, got \[0, 1\]"):
        TokenAccuracy([0, 1])


def test_gradient_clip_handler_rejects_bad_norm_and_accumulation():
    with pytest.raises(ValueError, match="max_norm must be > 0, got 0"):
        GradientClipHandler(0)
    var = torch.nn.Linear(2, 2)
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[], network=var,
                                optimizer=torch.optim.SGD(var.parameters(), lr=0.1), loss_function=NextScaleLoss(),
                                accumulation_steps=2)
    with pytest.raises(ValueError, match="does not support gradient accumulation .*accumulation_steps=2"):
        GradientClipHandler(1.0).attach(trainer)


def test_prepare_batch_refuses_a_tokenizer_saved_before_the_switch():
    tokenizer = msvqgan_tiny(scales=SCALES, num_embeddings=16, embedding_dim=4, quantize=False)
    with pytest.raises(ValueError, match="quantizer is not active .*--tokenizer_checkpoint"):
        VARPrepareBatch(tokenizer)


def test_supervised_trainer_learns_tokens_per_condition():
    tokenizer = _tokenizer()
    _, label, tokens = _data(tokenizer)
    torch.manual_seed(0)
    var = var_tiny(num_embeddings=16, embedding_dim=4, scale_lengths=tokenizer.quantizer.scale_lengths,
                   condition_dropout=0.0)
    data = [{"tokens": tokens, "label": label}] * 100
    x, _, _, _ = VARPrepareBatch(tokenizer)({"tokens": tokens, "label": label})

    def accuracy_now() -> float:
        var.eval()
        with torch.no_grad():
            return float(var(x, label).argmax(-1).eq(tokens).float().mean())

    before = accuracy_now()
    losses = []
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=data, network=var,
        optimizer=torch.optim.AdamW(var.parameters(), lr=3e-3), loss_function=NextScaleLoss(),
        prepare_batch=VARPrepareBatch(tokenizer), decollate=False,
        train_handlers=[GradientClipHandler(max_norm=1.0)],
    )
    accuracy = TokenAccuracy(tokenizer.quantizer.scale_lengths)
    accuracy.attach(trainer, "token_accuracy")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach())))
    trainer.run()
    assert float(trainer.state.output["grad_norm"]) > 0  # the clip handler ran and recorded the norm
    assert losses[-1] < 0.3 * losses[0]
    assert 0 < trainer.state.metrics["token_acc"] <= 1 and "token_acc_s2" in trainer.state.metrics
    # teacher-forced accuracy on the training tokens: from near chance to most tokens right
    after = accuracy_now()
    assert after > 0.6 and after > before + 0.4, (before, after)
