"""`fmnist_cnn_bn` against a transcription of LeadFL's official FashionMNISTCNN with the same
weights copied in: the official module in training mode (as the official code always runs it),
forward and gradient; no buffers; batch statistics in any mode; the batched engine's vmap
fallback; and the flat layout (LeadFL's "weight" names)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from flwbc.models import MODELS, FlatModel, build_model

# ---------------------------------------------------------------- the official model

# Transcribed from chaoyitud/LeadFL at 06ecc989de259eea4402c154ed4599a1a20fd3bd,
# fltk/nets/fashion_mnist_cnn.py:4-27.


class FashionMNISTCNN(torch.nn.Module):
    def __init__(self):
        super(FashionMNISTCNN, self).__init__()  # noqa: UP008

        self.layer1 = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, kernel_size=5, padding=2),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.layer2 = torch.nn.Sequential(
            torch.nn.Conv2d(16, 32, kernel_size=5, padding=2),
            torch.nn.BatchNorm2d(32),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(7 * 7 * 32, 10)

    def forward(self, x):
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.fc(self.flatten(x))

        return x


# ---------------------------------------------------------------- helpers


def _pair(seed: int = 0) -> tuple[FlatModel, torch.Tensor, FashionMNISTCNN]:
    """Ours at a random flat vector (BatchNorm scale and shift moved off 1 and 0), and the
    official module with the same weights copied in by name."""
    flat = FlatModel(build_model("fmnist_cnn_bn", 1, 28, 10))
    gen = torch.Generator().manual_seed(seed)
    w = flat.init_vector(seed) + 0.1 * torch.randn(flat.num_params, generator=gen)
    official = FashionMNISTCNN()
    missing, unexpected = official.load_state_dict(flat.unflatten(w), strict=False)
    assert unexpected == []
    # only its running statistics are not ours (torch does not report num_batches_tracked)
    assert sorted(missing) == sorted(
        f"{layer}.1.{buf}"
        for layer in ("layer1", "layer2")
        for buf in ("running_mean", "running_var")
    )
    official.train()  # the official code never calls .eval()
    return flat, w, official


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- against the official model


def test_forward_equals_the_official_model_in_training_mode() -> None:
    flat, w, official = _pair()
    x = _images(16)
    want = F.log_softmax(official(x), dim=1)  # its CrossEntropy = NLL of the log-softmax
    torch.testing.assert_close(flat(w, x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flat(w, x, channels_last=False), want, rtol=1e-5, atol=1e-5)
    # the official model in eval mode uses its running statistics instead: a different model
    official.eval()
    assert not torch.allclose(flat(w, x), F.log_softmax(official(x), dim=1), atol=1e-3)


def test_gradient_equals_the_official_cross_entropy_gradient() -> None:
    # in float64: the conv biases in front of BatchNorm have a zero gradient, float32 noise
    flat, w, official = _pair(3)
    official.double()
    x, y = _images(16, 4).double(), torch.arange(16) % 10
    v = w.double().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.nll_loss(flat(v, x), y), v)
    official.zero_grad()
    torch.nn.CrossEntropyLoss()(official(x), y).backward()
    want = torch.cat([p.grad.reshape(-1) for p in official.parameters()])
    torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-12)
    assert grad.abs().max() > 1e-3


def test_batch_statistics_in_any_mode_and_no_buffers() -> None:
    module = build_model("fmnist_cnn_bn", 1, 28, 10)
    assert list(module.buffers()) == []
    x = _images(8)
    train = module(x)
    module.eval()
    torch.testing.assert_close(module(x), train, rtol=0, atol=0)
    # an image's prediction depends on its batch, as officially (batch statistics)
    assert not torch.allclose(module(x[:4]), train[:4], atol=1e-4)


def test_layout_and_weight_mask_follow_the_official_names() -> None:
    flat = FlatModel(build_model("fmnist_cnn_bn", 1, 28, 10))
    official = FashionMNISTCNN()
    assert flat.names == [n for n, _ in official.named_parameters()]
    assert flat.num_params == sum(p.numel() for p in official.parameters()) == 29034
    # the LeadFL / FL-WBC "weight" masks pick up the BatchNorm scales as the official code does
    want = torch.cat(
        [torch.full((p.numel(),), "weight" in n) for n, p in official.named_parameters()]
    )
    assert torch.equal(flat.weight_mask, want)
    assert int((~flat.weight_mask).sum()) == 16 + 16 + 32 + 32 + 10
    # torch's default init: BatchNorm scale 1, shift 0
    parts = flat.unflatten(flat.init_vector(0))
    assert torch.equal(parts["layer1.1.weight"], torch.ones(16))
    assert torch.equal(parts["layer2.1.bias"], torch.zeros(32))
    assert "fmnist_cnn_bn" in MODELS


def test_vmap_fallback_of_the_batched_engine_equals_each_row() -> None:
    flat, w, _ = _pair(5)
    ws = torch.stack([w, w * 0.9, w + 0.01])
    x = torch.stack([_images(6, s) for s in (7, 8, 9)])
    got = torch.func.vmap(partial(flat, channels_last=False))(ws, x)
    want = torch.stack([flat(ws[i], x[i]) for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
