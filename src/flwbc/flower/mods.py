"""Flower mods: local DP applied to a finished update, outside the client's training.

A mod only sees the message in and the reply out, which is enough for local DP (clip and noise
the update) but not for FL-WBC, which acts inside every local step.
"""

from __future__ import annotations

from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from flwbc.client.transform import ClientRun
from flwbc.defenses.ldp import LocalDP
from flwbc.flower.common import ARRAYS, node_experiment, pack, read_train_config, unpack


def ldp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Local DP (paper §7.1) as a mod: clip the benign update in the train reply to L2 norm C
    and add noise of std σ_dp from the stream (seed, "ldp", t, c), exactly as the client option
    does. Active only when the experiment says `defense.client: ldp` and `flower.ldp: mod`."""
    reply = call_next(msg, context)
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    t, c, cfg_json = read_train_config(msg)
    exp = node_experiment(cfg_json, dict(context.node_config))
    cfg = exp.cfg
    ldp = [d for d in exp.defenses if isinstance(d, LocalDP)]
    if not ldp or cfg.flower.ldp != "mod" or c in exp.malicious_ids:
        return reply
    update = unpack(reply.content[ARRAYS], exp.device, exp.dtype)
    w0 = unpack(msg.content[ARRAYS], exp.device, exp.dtype)
    state = ldp[0].init(ClientRun(exp, t, c, False, w0))
    reply.content[ARRAYS] = pack(ldp[0].final(state, update))
    return reply
