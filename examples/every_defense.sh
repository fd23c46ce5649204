#!/usr/bin/env bash
# Every registered server rule, pre-aggregation step (in front of median) and client defense
# for two rounds from the command line on a small slice of a dataset, under a backdoor
# (BadNets, 2 of 8 clients a round): a smoke test that each runs end to end. Prints one line per
# defense with its exit status, its last round's test accuracy and backdoor success, and what
# its detection record says; exits 1 if any failed.
#
#   bash examples/every_defense.sh [DATASET] [OUT] [ONLY]
#
# DATASET: fmnist, cifar10 or mnist; ONLY: a glob on the labels (rule-NAME, pre-NAME,
# client-NAME), e.g. 'pre-*'.
#
# Data: FLWBC_DATA_DIR, or downloaded. A few seconds per defense on Fashion-MNIST.
set -uo pipefail
ds=${1:-fmnist}
out=${2:-runs/every-defense-$ds}
only=${3:-*}
mkdir -p "$out"
names() { python -c "from $1 import $2; print(' '.join(sorted($2)))"; }
rules=$(names flwbc.server AGGREGATORS)
steps=$(names flwbc.preagg PRE_AGGREGATORS)
clients=$(names flwbc.defenses CLIENT_DEFENSES)
failed=0
one() {  # one <label> <flwbc run options...>
  local label=$1
  shift
  # shellcheck disable=SC2053
  [[ $label == $only ]] || return 0
  rm -rf "${out:?}/$label"
  flwbc run --set data.name="$ds" --set data.train_fraction=0.02 \
    --set federation.num_clients=12 --set federation.clients_per_round=8 \
    --set federation.rounds=2 --set local.epochs=1 --set local.batch_size=32 \
    --set attack.name=badnets --set attack.num_malicious=2 --set attack.epochs=1 \
    --set 'attack.rounds=[1,2]' --set threads=1 \
    --set output.dir="$out" --set output.name="$label" --no-progress "$@" > "$out/$label.log" 2>&1
  local status=$?
  [ $status -ne 0 ] && failed=1
  local last
  last=$(python - "$out/$label" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
try:
    r = json.loads(run.joinpath("rounds.jsonl").read_text().splitlines()[-1])
except (OSError, IndexError):
    sys.exit()
parts = [f"{k}={r[k]:.3f}" for k in ("test_acc", "backdoor_acc") if r.get(k) is not None]
det = (json.loads(run.joinpath("summary.json").read_text()).get("detection") or {})
if det:
    parts.append("detection " + " ".join(f"{k}={det[k]}" for k in ("tp", "fp", "fn", "tn")))
print(" ".join(parts))
PY
)
  echo "$label exit=$status $last"
}
for r in $rules; do one "rule-$r" --set server.aggregator="$r"; done
for s in $steps; do one "pre-$s" --set server.aggregator=median --set "server.pre=[$s]"; done
for c in $clients; do one "client-$c" --set defense.client="$c"; done
exit $failed
