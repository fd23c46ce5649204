#!/usr/bin/env bash
# Every registered attack for two rounds from the command line on a small slice of a dataset:
# a smoke test that each runs end to end. Prints one line per attack with its exit status and
# its last round's test accuracy (and backdoor success or D_M confidence); exits 1 if any failed.
#
#   bash examples/every_attack.sh [DATASET] [OUT]      (DATASET: fmnist, cifar10, mnist)
#
# Data: FLWBC_DATA_DIR, or downloaded. About 3 s per attack on Fashion-MNIST, 5 s on CIFAR-10.
set -uo pipefail
ds=${1:-fmnist}
out=${2:-runs/every-attack-$ds}
mkdir -p "$out"
attacks=$(python -c "from flwbc.attacks import ATTACKS; print(' '.join(sorted(ATTACKS)))")
failed=0
for a in $attacks; do
  agg=median
  [ "$a" = fang_krum ] && agg=krum
  rm -rf "${out:?}/$a"
  flwbc run --set data.name="$ds" --set data.train_fraction=0.02 \
    --set federation.num_clients=12 --set federation.clients_per_round=8 \
    --set federation.rounds=2 --set local.epochs=1 --set local.batch_size=32 \
    --set attack.name="$a" --set attack.num_malicious=2 --set attack.epochs=1 \
    --set 'attack.rounds=[1,2]' --set server.aggregator=$agg --set threads=1 \
    --set output.dir="$out" --set output.name="$a" --no-progress > "$out/$a.log" 2>&1
  status=$?
  [ $status -ne 0 ] && failed=1
  last=$(tail -n 1 "$out/$a/rounds.jsonl" 2>/dev/null | python -c "
import json, sys
r = json.loads(sys.stdin.read() or '{}')
print(' '.join(f'{k}={r[k]:.3f}' for k in ('test_acc', 'backdoor_acc', 'target_conf') if r.get(k) is not None))")
  echo "$a exit=$status $last"
done
exit $failed
