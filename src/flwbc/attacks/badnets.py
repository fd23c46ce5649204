"""BadNets (Gu, Dolan-Gavitt & Garg, "BadNets: Identifying vulnerabilities in the machine
learning model supply chain", 2017), as a federated data-poisoning attack: in an adversarial
round each attacker trains honestly on its own images, a `poison_fraction` of them carrying a
fixed pixel trigger and relabelled `target` (the paper's all-to-one, "single target" attack),
and sends the resulting update unchanged.

Assumed knowledge: the attacker's own data and the global model it is sent.

Options (`flwbc.attacks.backdoor.BackdoorOptions`): target, poison_fraction, the trigger
(pattern, size, location, margin or x/y, value, gap) and epochs. Default trigger: a 4×4
checkerboard one pixel in from the bottom-right corner, in the spirit of the paper's MNIST
"pattern" backdoor (bottom-right); the paper gives no pixel-exact pattern, so its exact shape
and size are ours; `pattern: pixel` is the paper's single-pixel backdoor.

Deviations: the paper poisons an outsourced centralised training set; here the poisoned set is
an FL attacker's own data, re-drawn each adversarial round (see `flwbc.attacks.backdoor`), and
the attacker trains with the experiment's local lr, momentum and batch size.
"""

from __future__ import annotations

from flwbc.attacks.backdoor import BackdoorAttack, BackdoorOptions
from flwbc.attacks.base import register_attack


@register_attack("badnets")
class BadNets(BackdoorAttack[BackdoorOptions]):
    """Train on own data with a fraction triggered and relabelled to the target."""
