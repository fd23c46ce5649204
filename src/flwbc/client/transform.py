"""The client-transform kind: what attacks and client defenses do inside one client's local
training, written for that one client with explicit state.

A transform is told when the client's training starts (`init`, which returns the client's
state for the round), may change the weights it starts from (`start`, Lockdown's masking), is
told when each local epoch starts (`start_epoch`), may add a term to the
gradient of every step (`grad`), acts after every SGD step (`after_step`) and post-processes
the finished update (`final`); `stats` reports per-client numbers for the round record. Every
hook gets the client's state and the client's own tensors ([P]): a transform never sees other
clients, rows or lock-step groups. The engines train G clients in lock-step, batching the
forward and backward passes, and call each client's hooks on its own row, so a transform
written here runs unchanged in every engine (FedJAX's client init/step/final, run by
backends that batch them).

A benign client's transforms are its run's chain of client defenses, applied in order; an
attacker's is its attack. Hooks of different clients may run concurrently (in threads): keep
what belongs to a client in its state, not on the transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from flwbc.context import ExperimentContext


@dataclass(frozen=True)
class ClientRun:
    """One client's local training in one round of one run, as its transforms see it."""

    exp: ExperimentContext
    round: int
    client: int
    malicious: bool
    w0: Tensor
    """The global weights [P] the client starts from."""


@dataclass(frozen=True)
class SGDStep:
    """One local SGD step of one client, after the optimiser moved (torch's SGD with momentum,
    v ← μv + g, W ← W − ηv): the stepped weights `w_hat`, the step −ηv, the gradient g it
    applied, and the optimiser's momentum buffer v, which a transform that takes an optimiser
    step of its own advances in place (the official LeadFL code's second step). `epoch` and
    `index` place the step in the round's local training (both from 0)."""

    w_hat: Tensor
    step: Tensor
    grad: Tensor
    velocity: Tensor
    lr: float
    momentum: float
    epoch: int
    index: int


class ClientTransform:
    """Base of every client-side transform (attacks and client defenses): each hook has a
    default that changes nothing, so a transform overrides the ones it needs."""

    def init(self, run: ClientRun) -> Any:
        """The client's state for this round (default: the `ClientRun` itself, which the other
        hooks then receive as `state`)."""
        return run

    def start(self, state: Any, w: Tensor) -> Tensor:
        """The weights [P] the client starts local training from, given the global weights w
        (default: w). The update it sends is still measured from the global weights."""
        return w

    def start_epoch(self, state: Any, epoch: int) -> None:
        """Called before the client's local epoch `epoch` (from 0) begins."""

    def grad(self, state: Any, w: Tensor) -> Tensor | None:
        """A term added to the client's gradient at every step, at its current weights w [P]
        (None: nothing); terms of a chain are summed in order."""
        return None

    def after_step(self, state: Any, s: SGDStep) -> Tensor:
        """The weights [P] to continue from after the SGD step `s` (default: `s.w_hat`); in a
        chain, each transform sees the weights the previous one returned."""
        return s.w_hat

    def final(self, state: Any, update: Tensor) -> Tensor:
        """What the client sends, from its trained update [P] (default: unchanged)."""
        return update

    def stats(self, state: Any) -> dict[str, float]:
        """Per-client numbers for the round record, averaged over the clients that report them
        (e.g. FL-WBC's perturbed share). Default: none."""
        return {}


def overrides(transform: ClientTransform, hook: str) -> bool:
    """Whether `transform` defines `hook` itself (the engine skips hooks nobody defines)."""
    return getattr(type(transform), hook) is not getattr(ClientTransform, hook)
