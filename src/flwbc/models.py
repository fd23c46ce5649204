"""The paper's models and a flat-parameter view of them.

Clients, aggregators and FL-WBC all work on one flat float32 vector per model: a round is then a
`[K, P]` matrix of client models, which is what robust aggregation rules and the batched engine
need. `FlatModel` evaluates a module at any flat vector through `torch.func.functional_call`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from flwbc.errors import FlwbcError
from flwbc.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory `f(in_channels, image_size, num_classes) -> nn.Module`."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, factory)
        return factory

    return deco


@register_model("fmnist_cnn")
class FMNISTCNN(nn.Module):
    """Reference code's Fashion-MNIST CNN: two 5x5 conv (16, 32, pad 2) + pool, one linear."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc = nn.Linear(32 * (image_size // 4) ** 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


@register_model("fmnist_cnn_bn")
class FMNISTCNNBN(nn.Module):
    """LeadFL's Fashion-MNIST CNN: `fmnist_cnn` with BatchNorm after each conv, normalising
    with the batch's statistics always.

    Zhu et al., ICML 2023; chaoyitud/LeadFL at 06ecc98, `fltk/nets/fashion_mnist_cnn.py:9-20`:
    conv 5×5 (16, pad 2), BatchNorm, ReLU, max-pool 2; the same with 32 channels; linear
    1568 → 10. The official code never puts its model in eval mode (no `.eval()` in
    `fltk/core`), so its BatchNorm layers always normalise with the current batch's statistics,
    in training and at test time (test batches of 1000). `track_running_stats=False` is exactly
    that, in any mode, and leaves the module with no buffers, which `FlatModel` does not carry:
    only the parameters (the BatchNorm scale and shift among them, named `weight` and `bias` as
    officially, so "weight" masks pick the scale up as the official code's do) are trained and
    aggregated. Predictions therefore depend on the batch: evaluate with LeadFL's
    `eval.batch_size: 1000`. The modules are named as officially (`layer1.0` the first conv,
    `layer1.1` its BatchNorm, ..., `fc`), so an official `state_dict` loads with
    `strict=False` (its running statistics, which its forward never uses, are left out).

    Departures: the output is log-softmax (NLL loss) where the official code returns logits
    (cross-entropy), the same loss and predictions; the running statistics the official
    `state_dict` carries are not kept, so they do not enter distance-based rules as they do in
    its aggregation (`flwbc.server.leadfl_bulyan`). No batched forward is registered: the
    batched engine runs it through `torch.func.vmap`.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10):
        super().__init__()
        self.layer1 = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2),
            nn.BatchNorm2d(16, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.layer2 = nn.Sequential(
            nn.Conv2d(16, 32, 5, padding=2),
            nn.BatchNorm2d(32, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(32 * (image_size // 4) ** 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer2(self.layer1(x))
        return F.log_softmax(self.fc(h.flatten(1)), dim=1)


@register_model("cifar_cnn")
class CIFARCNN(nn.Module):
    """Reference code's CIFAR-10 CNN (LeNet-5 style): conv 6, conv 16, linear 120-84-10."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


@register_model("mlp")
class MLP(nn.Module):
    """A small MLP (one hidden layer of 200 units), for quick experiments and tests."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        hidden: Annotated[int, Field(ge=0, description="units of the hidden layer")] = 200,
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


def build_model(
    name: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """The registered model `name` for the dataset's image shape and classes, with its
    `options` (the factory's further keyword arguments, checked against their types)."""
    factory = MODELS.lookup(name)
    kwargs: dict[str, Any] = {}
    if options:
        from flwbc.plugin_options import signature_model, validate_options

        model = signature_model(name, factory)
        fixed = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
        checked = validate_options("model", name, model, {**fixed, **options})
        kwargs = {k: getattr(checked, k) for k in options}
    try:
        return factory(
            in_channels=in_channels, image_size=image_size, num_classes=num_classes, **kwargs
        )
    except (TypeError, ValueError) as err:
        raise FlwbcError(f"model '{name}': {err}") from None


class FlatModel:
    """A module evaluated at flat parameter vectors.

    `names`, `shapes` and `numels` describe the layout (the module's `named_parameters` order);
    `weight_mask` marks the entries of parameters whose name contains "weight" (the reference
    code perturbs only those with FL-WBC).
    """

    def __init__(self, module: nn.Module):
        self.module = module
        params = list(module.named_parameters())
        self.names = [n for n, _ in params]
        self.shapes = [tuple(p.shape) for _, p in params]
        self.numels = [p.numel() for _, p in params]
        self.num_params = sum(self.numels)
        self.weight_mask = torch.cat(
            [torch.full((p.numel(),), "weight" in n, dtype=torch.bool) for n, p in params]
        )

    def init_vector(self, seed: int) -> Tensor:
        """Fresh parameters from torch's default initialisation under a fixed seed."""
        gen_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            for m in self.module.modules():
                if hasattr(m, "reset_parameters") and m is not self.module:
                    m.reset_parameters()
        finally:
            torch.random.set_rng_state(gen_state)
        return self.get_vector()

    def get_vector(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of `flat` shaped as the module's parameters, keyed by name."""
        parts = torch.split(flat, self.numels)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def __call__(self, flat: Tensor, x: Tensor, *, channels_last: bool = True) -> Tensor:
        """The module's output at parameters `flat`.

        Images and convolution weights are handed over in channels-last layout. Measured in
        isolation on the 2-core CPU, that took Fashion-MNIST CNN inference from about 9,000 to
        16,400 images/s and training from about 8,000 to 10,400; weight views of the flat
        vector (NCHW) made the convolution fall back to a slower path. Under `torch.func.vmap`,
        which cannot change memory formats, pass `channels_last=False`.
        """
        params = self.unflatten(flat)
        if channels_last:
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            params = {
                n: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                for n, t in params.items()
            }
        return torch.func.functional_call(self.module, params, (x,))

    def to(self, device: torch.device | str) -> FlatModel:
        self.module.to(device)
        self.weight_mask = self.weight_mask.to(device)
        return self
