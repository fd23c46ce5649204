"""Backdoor attacks, the shared part: a pixel trigger and training on triggered data.

All-to-one backdoors: the attacker wants every image that carries the trigger classified as
`target`, while clean images keep their labels. A `Trigger` is a patch written into raw uint8
images, pixel-exactly, before normalisation; its pixels are set to fixed values in every
channel. Patterns (the patch's top-left pixel at `x`, `y`, or `margin` pixels in from the
corner `location`):

- `square`: a solid `size`×`size` patch of `value`;
- `checkerboard`: the BadNets-style pattern, a `size`×`size` patch whose pixels alternate
  `value` (the top-left one) and 0;
- `pixel`: one pixel of `value` (BadNets' single-pixel backdoor);
- `bars`: DBA's global trigger, bars of 1×`size` pixels of `value`, two per row, `gap` pixels
  apart across and `gap` rows apart down (DBA's code: 4 bars of 1×4, gap 2, at (0, 0));
- `nine_pixel`: LeadFL's "9-pixel" trigger (`NINE_PIXEL`), nine pixels in a 5×3 box: white
  (`value`), black (0) and cells it does not write (`size` is ignored).

`BackdoorAttack` is the data-poisoning base class of `badnets`, `dba`, `model_replacement`
and `neurotoxin`: in an adversarial round an attacker trains as a benign client would (the
experiment's local epochs, batch size, lr and momentum) on its own data, of which a fraction
`poison_fraction` is triggered and relabelled `target`. Which images are poisoned is drawn
from the keyed stream (seed, "poison", t, c): the first ⌊f·n + ½⌋ of a random permutation of
its n images, so the batch order (stream (seed, "data", t, c)) is the benign one. Poisoned
images are drawn from all of the attacker's images, whatever their label, as in DBA's and
Bagdasaryan et al.'s code. Every run of a backdoor attack records the `backdoor` metric
(`backdoor_acc`, the success rate of the global trigger on the test set).

Shared defaults: `target` 2 and `poison_fraction` 20/64 = 0.3125 are DBA's and Bagdasaryan
et al.'s code (`poison_label_swap: 2`, 20 poisoned images per batch of 64).

Assumed knowledge: the attacker's own data and the global model it is sent; nothing of other
clients. Subclasses add what they assume beyond that.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from flwbc.attacks.base import Attack
from flwbc.client.local import Balanced, Epoch, Term, benign_plan, epoch_batches
from flwbc.errors import FlwbcError
from flwbc.plugin_options import PluginOptions
from flwbc.rng import torch_generator

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext

Pattern = Literal["square", "checkerboard", "pixel", "bars", "nine_pixel"]
Corner = Literal["bottom_right", "bottom_left", "top_left", "top_right"]

NINE_PIXEL: tuple[tuple[int, ...], ...] = (
    (1, 0, 1),
    (-1, 1, -1),
    (-1, -1, 0),
    (-1, 1, -1),
    (1, 0, 1),
)
"""The `nine_pixel` pattern, row by row: 1 white (`value`), 0 black, −1 not written.

LeadFL's "9-pixel" backdoor (Zhu et al., ICML 2023; chaoyitud/LeadFL at 06ecc98: the template's
`backdoor_type: 9-pixel` selects `PatternSynthesizer`, `fltk/core/federator.py:101-105`), the
pattern of `backdoors/synthesizers/pattern_synthesizer.py:14-20` (its −10 cells are the ones
not written: `mask_value`, :28, and the mask, :59, 62-66), at rows 3-7 and columns 23-25
(`x_top = 3` is the row, `y_top = 23` the column, :23-26, :57): `pattern: nine_pixel, x: 23,
y: 3` places it there. (The official code refuses a box that reaches the last row or column,
:51-55, off by one; flwbc places it anywhere it fits.)

Contrast: the official code writes the pattern after normalising it with MNIST's statistics
(:60, `backdoors/tasks/mnist_task.py:10`), so white is (1 − 0.1307)/0.3081 = 2.8215 and black
−0.4242, into Fashion-MNIST images that are not normalised (ToTensor only, pixels in [0, 1]):
its white is 2.8× the brightest clean pixel and its black 0.42 below the darkest. flwbc writes
255 and 0 into the raw images, which Fashion-MNIST's (0.1307, 0.3081) normalisation turns into
the same 2.8215 and −0.4242, but the clean pixels are normalised too and span [−0.4242, 2.8215]:
here the trigger's white and black are the clean range's ends, a contrast about 2.8× lower
relative to the image. A uint8 trigger written before normalisation cannot reproduce that;
the dataset `fmnist_raw` (ToTensor only) with the option `levels: [2.8215, -0.4242]` does.
"""


@dataclass(frozen=True)
class Stamp:
    """Pixels to overwrite in [.., C, H, W] images: where (`mask` [H, W]) and with what
    (`values` [H, W] uint8, the same in every channel; or [C, H, W] float32 raw values from
    `with_levels`)."""

    mask: Tensor
    values: Tensor

    def apply(self, x: Tensor) -> Tensor:
        """A copy of the uint8 images `x` [..., C, H, W] with the stamp's pixels written (as
        float32 images when the stamp's values are floats, `with_levels`)."""
        if x.dtype != torch.uint8:
            raise TypeError(f"a trigger is written into raw uint8 images, got {x.dtype}")
        if tuple(x.shape[-2:]) != tuple(self.mask.shape):
            raise ValueError(f"images {tuple(x.shape)} do not match the trigger's {self.shape}")
        mask, values = self.mask.to(x.device), self.values.to(x.device)
        return torch.where(mask, values, x.to(values.dtype))

    def with_levels(
        self,
        white: int,
        levels: tuple[float, float],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> Stamp:
        """The stamp whose `white` pixels become `levels[0]` and its other pixels `levels[1]`
        after the normalisation (mean, std): float values [C, H, W] on the raw 0..255 scale,
        (level·std + mean)·255 per channel, which may lie outside 0..255."""
        m = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
        level = torch.where(self.values == white, levels[0], levels[1]).to(torch.float64)
        raw = torch.where(self.mask, (level * s + m) * 255.0, torch.zeros_like(level))
        return Stamp(self.mask, raw.to(torch.float32))

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.mask.shape
        return int(h), int(w)


@dataclass(frozen=True)
class Trigger:
    """A trigger's geometry; `stamp(h, w)` places it on h×w images, `parts(h, w, n)` splits it
    into n disjoint stamps whose union is the whole (DBA's local triggers)."""

    pattern: Pattern = "checkerboard"
    size: int = 4
    location: Corner = "bottom_right"
    margin: int = 1
    x: int | None = None
    y: int | None = None
    value: int = 255
    gap: int = 2
    bars: int = 4
    """bars: how many bars the global trigger has (two per row)."""

    def box(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """The trigger in its own bounding box: the values [bh, bw] (−1 where the trigger does
        not write) and its natural pieces (boolean masks of the box): one per bar, or one per
        row for the other patterns."""
        v, s = self.value, self.size
        if self.pattern == "pixel":
            return np.full((1, 1), v), [np.ones((1, 1), bool)]
        if self.pattern == "nine_pixel":
            cells = np.array(NINE_PIXEL)
            box = np.where(cells == 1, v, np.where(cells == 0, 0, -1))
            rows = []
            for r in range(cells.shape[0]):
                m = np.zeros(cells.shape, bool)
                m[r] = cells[r] >= 0
                rows.append(m)
            return box, rows
        if self.pattern in ("square", "checkerboard"):
            box = np.full((s, s), v)
            if self.pattern == "checkerboard":
                box[(np.add.outer(np.arange(s), np.arange(s)) % 2) == 1] = 0
            rows = []
            for r in range(s):
                m = np.zeros((s, s), bool)
                m[r] = True
                rows.append(m)
            return box, rows
        n = self.bars
        height = (math.ceil(n / 2) - 1) * (1 + self.gap) + 1
        width = s if n == 1 else 2 * s + self.gap
        box = np.full((height, width), -1)
        pieces = []
        for k in range(n):
            r, c = (k // 2) * (1 + self.gap), (k % 2) * (s + self.gap)
            m = np.zeros((height, width), bool)
            m[r, c : c + s] = True
            box[m] = v
            pieces.append(m)
        return box, pieces

    def origin(self, h: int, w: int, bh: int, bw: int) -> tuple[int, int]:
        """(row, column) of the box's top-left pixel on h×w images."""
        if self.x is not None and self.y is not None:
            return self.y, self.x
        m = self.margin
        row = m if self.location.startswith("top") else h - bh - m
        col = m if self.location.endswith("left") else w - bw - m
        return row, col

    def _place(self, h: int, w: int, pieces: list[np.ndarray], box: np.ndarray) -> list[Stamp]:
        bh, bw = box.shape
        r0, c0 = self.origin(h, w, bh, bw)
        if r0 < 0 or c0 < 0 or r0 + bh > h or c0 + bw > w:
            raise FlwbcError(
                f"a {self.pattern} trigger of {bh}x{bw} pixels at row {r0}, column {c0} does not "
                f"fit {h}x{w} images; choose a smaller size or another place"
            )
        out = []
        for piece in pieces:
            mask = np.zeros((h, w), bool)
            values = np.zeros((h, w), np.uint8)
            mask[r0 : r0 + bh, c0 : c0 + bw] = piece
            values[r0 : r0 + bh, c0 : c0 + bw] = np.where(piece, box, 0).astype(np.uint8)
            out.append(Stamp(torch.from_numpy(mask), torch.from_numpy(values)))
        return out

    def stamp(self, h: int, w: int) -> Stamp:
        """The whole trigger on h×w images."""
        box, pieces = self.box()
        return self._place(h, w, [np.logical_or.reduce(pieces)], box)[0]

    def parts(self, h: int, w: int, n: int) -> list[Stamp]:
        """The trigger split into n disjoint local triggers whose union is the whole: the bars
        (one each when n equals their number), else the natural pieces (rows of a patch)
        dealt into n contiguous groups."""
        box, pieces = self.box()
        if n > len(pieces):
            raise FlwbcError(
                f"a {self.pattern} trigger of size {self.size} cannot be split into {n} parts "
                f"(it has {len(pieces)} bars or rows)"
            )
        groups = np.array_split(np.arange(len(pieces)), n)
        merged = [np.logical_or.reduce([pieces[i] for i in g]) for g in groups]
        return self._place(h, w, merged, box)


class BackdoorOptions(PluginOptions):
    """Options every backdoor attack takes: the target, the poisoned share and the trigger."""

    target: int = Field(
        2, ge=0, description="the label every triggered image should get (DBA's code: 2)"
    )
    poison_fraction: float = Field(
        0.3125,
        gt=0,
        le=1,
        description="share of the attacker's images triggered and relabelled each round "
        "(DBA and Bagdasaryan et al.: 20 of a batch of 64)",
    )
    pattern: Pattern = Field(
        "checkerboard",
        description="trigger: square (solid patch), checkerboard (BadNets-style), pixel "
        "(one pixel), bars (DBA's 1×size bars, two per row) or nine_pixel (LeadFL's 5×3 "
        "9-pixel pattern; at LeadFL's place with x 23, y 3)",
    )
    size: int = Field(4, ge=1, description="patch side, or bar length, in pixels")
    location: Corner = Field("bottom_right", description="the corner the trigger sits in")
    margin: int = Field(1, ge=0, description="pixels between the trigger and the corner's edges")
    x: int | None = Field(
        None,
        ge=0,
        description="column of the trigger's top-left pixel (with y; overrides location)",
    )
    y: int | None = Field(
        None, ge=0, description="row of the trigger's top-left pixel (with x; overrides location)"
    )
    value: int = Field(255, ge=0, le=255, description="raw pixel value written (0..255)")
    gap: int = Field(2, ge=0, description="bars: pixels between bars, across and down")
    levels: tuple[float, float] | None = Field(
        None,
        description="the trigger's white and black pixels as the model sees them, written "
        "after normalisation (LeadFL's code: [2.8215, -0.4242], MNIST's normalisation of 1 and "
        "0, into fmnist_raw's [0, 1] images); default: value and 0 written into the raw images",
    )
    epochs: int | None = Field(
        None, ge=1, description="the attacker's local epochs (default: local.epochs)"
    )
    objective: Literal["replace", "mgda"] = Field(
        "replace",
        description="replace: a poison_fraction of the attacker's images is triggered and "
        "relabelled (BadNets); mgda: each batch of its clean images is paired with a copy "
        "whose first round(poison_fraction·B) images are triggered and relabelled, the two "
        "losses balanced by MGDA at every step (the blind backdoor LeadFL's code runs, "
        "with poison_fraction 1)",
    )

    @model_validator(mode="after")
    def _xy(self) -> BackdoorOptions:
        if (self.x is None) != (self.y is None):
            raise ValueError("give both x and y, or neither")
        if self.levels is not None and self.value == 0:
            raise ValueError("levels tells white from black by value: give a value above 0")
        return self

    def trigger(self, bars: int = 4) -> Trigger:
        return Trigger(
            pattern=self.pattern,
            size=self.size,
            location=self.location,
            margin=self.margin,
            x=self.x,
            y=self.y,
            value=self.value,
            gap=self.gap,
            bars=bars,
        )


BO = TypeVar("BO", bound=BackdoorOptions)


def poison_count(n: int, fraction: float) -> int:
    """How many of n images are poisoned: ⌊fraction·n + ½⌋."""
    return min(n, math.floor(fraction * n + 0.5))


def poison_indices(n: int, fraction: float, generator: torch.Generator) -> Tensor:
    """Which of n images are poisoned: the first `poison_count` of a random permutation."""
    return torch.randperm(n, generator=generator)[: poison_count(n, fraction)]


def poison(x: Tensor, y: Tensor, idx: Tensor, stamp: Stamp, target: int) -> tuple[Tensor, Tensor]:
    """Raw images `x` and labels `y` with images `idx` triggered and relabelled `target` (float
    images when the stamp writes floats)."""
    stamped = stamp.apply(x[idx])
    x, y = x.to(stamped.dtype, copy=True), y.clone()
    x[idx] = stamped
    y[idx] = target
    return x, y


def blind_plan(
    x: Tensor,
    y: Tensor,
    x_triggered: Tensor,
    target: int,
    fraction: float,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
) -> Iterator[Epoch]:
    """The blind backdoor's steps (`objective: mgda`): each batch of the clean images, in the
    benign order, as the second term and, as the first, a copy whose first round(fraction·B)
    images (Python's rounding, as the official synthesiser's) carry the trigger and the
    target label; the two balanced by MGDA (`Balanced`)."""
    for batches in epoch_batches(len(y), batch_size, epochs, generator):
        epoch: Epoch = []
        for idx in batches:
            k = round(len(idx) * fraction)
            xb, yb = x[idx].clone(), y[idx].clone()
            xb[:k] = x_triggered[idx[:k]]
            yb[:k] = target
            epoch.append(Balanced([Term(xb, yb), Term(x[idx], y[idx])]))
        yield epoch


class BackdoorAttack(Attack[BO]):
    """Train on the attacker's own data, a `poison_fraction` of it triggered and relabelled."""

    Options = BackdoorOptions
    goal = "targeted"
    metrics: ClassVar[tuple[str, ...]] = ("backdoor",)
    trigger_fields: ClassVar[frozenset[str]] = frozenset(BackdoorOptions.model_fields) - {
        "objective",
        "poison_fraction",
        "epochs",
    }
    """The options that shape the global trigger and target: runs whose attacks agree on them
    share a clean baseline (`flwbc.evaluation.trigger.baseline_metric`)."""

    @property
    def opts(self) -> BackdoorOptions:
        return self.options

    @property
    def target(self) -> int:
        return self.opts.target

    def trigger(self) -> Trigger:
        """The global trigger (the one tested)."""
        return self.opts.trigger()

    def local_stamp(self, exp: ExperimentContext, t: int, c: int) -> Stamp:
        """The trigger attacker c writes into its images in round t (default: the global one)."""
        _, h, w = exp.dataset.image_shape
        return self.trigger().stamp(h, w)

    def written(self, exp: ExperimentContext, stamp: Stamp) -> Stamp:
        """`stamp` as it is written into the dataset's raw images: with `levels`, float values
        that the dataset's normalisation maps to them."""
        if self.opts.levels is None:
            return stamp
        ds = exp.dataset
        return stamp.with_levels(self.opts.value, self.opts.levels, ds.mean, ds.std)

    def check(self, exp: ExperimentContext) -> None:
        """One-line errors for options that do not fit the dataset: the target, and every
        attacker's trigger (built once here, so a misfit shows before any round)."""
        k = exp.dataset.num_classes
        if self.target >= k:
            raise FlwbcError(
                f"attack '{self.name}': target {self.target} outside 0..{k - 1} of "
                f"{exp.cfg.data.name}"
            )
        _, h, w = exp.dataset.image_shape
        self.trigger().stamp(h, w)
        for c in exp.malicious_ids:
            self.local_stamp(exp, 1, c)

    def poisoned_data(self, exp: ExperimentContext, t: int, c: int) -> tuple[Tensor, Tensor]:
        """Attacker c's round-t training set (normalised, on the device) and labels."""
        self.check(exp)
        ds = exp.dataset
        idx = torch.from_numpy(exp.client_indices[c])
        x, y = ds.train_x[idx], ds.train_y[idx]
        gen = torch_generator(exp.cfg.seed, "poison", t, c)
        which = poison_indices(len(y), self.opts.poison_fraction, gen)
        x, y = poison(x, y, which, self.written(exp, self.local_stamp(exp, t, c)), self.target)
        return ds.normalize(x).to(exp.device, exp.dtype), y.to(exp.device)

    def epochs(self) -> int:
        return self.opts.epochs or self.cfg.local.epochs

    def plan(
        self, exp: ExperimentContext, t: int, c: int, generator: torch.Generator
    ) -> tuple[int, Iterator[Epoch]]:
        batch = self.cfg.local.batch_size
        if self.opts.objective == "mgda":
            x, y, xt = self.blind_data(exp, t, c)
            return len(y), blind_plan(
                x, y, xt, self.target, self.opts.poison_fraction, batch, self.epochs(), generator
            )
        x, y = self.poisoned_data(exp, t, c)
        return len(y), benign_plan(x, y, batch, self.epochs(), generator)

    def blind_data(self, exp: ExperimentContext, t: int, c: int) -> tuple[Tensor, Tensor, Tensor]:
        """Attacker c's clean images and labels and the same images triggered (all normalised,
        on the device), for `objective: mgda`."""
        self.check(exp)
        ds = exp.dataset
        idx = torch.from_numpy(exp.client_indices[c])
        raw = ds.train_x[idx]
        triggered = self.written(exp, self.local_stamp(exp, t, c)).apply(raw)
        dev = (exp.device, exp.dtype)
        return (
            ds.normalize(raw).to(*dev),
            ds.train_y[idx].to(exp.device),
            ds.normalize(triggered).to(*dev),
        )

    def group_key(self, exp: ExperimentContext, n: int) -> tuple[Hashable, ...]:
        return (n, self.cfg.local.batch_size, self.epochs(), self.opts.objective)

    def test_trigger(self, exp: ExperimentContext) -> Tensor:
        """The test images (raw, uint8 or float with `levels`) with the global trigger written
        into each."""
        self.check(exp)
        _, h, w = exp.dataset.image_shape
        return self.written(exp, self.trigger().stamp(h, w)).apply(exp.dataset.test_x)
