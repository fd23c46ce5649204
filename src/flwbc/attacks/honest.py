"""No attack, with the attackers in place: the attackers take part in the schedule's rounds but
train on their own data and send their honest updates, as benign clients would (without a
client-side defense, which attackers never apply).

The paired baseline for measuring what an attack costs: a run with `attack.name: honest` has
the same attackers, the same participants in every round and the same data order as a run of
any other attack with the same seed and schedule, so the difference between the two is the
attack alone. (Disabling the attack instead changes the participants: every client is then
benign and eligible.) Used by `flwbc matrix` for each defense's clean cell. Assumes nothing.
"""

from __future__ import annotations

from flwbc.attacks.base import register_attack
from flwbc.attacks.crafted import HonestTraining


@register_attack("honest")
class Honest(HonestTraining[None]):
    """Attackers train and send honest updates: the baseline an attack is measured against."""

    goal = "none"
