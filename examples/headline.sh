#!/usr/bin/env bash
# The headline experiment: Fashion-MNIST IID, a trained model, one forced adversarial round
# (5 of 10 clients malicious, one image in D_M), run without defense and with FL-WBC (s = 0.4)
# from the same saved model with the same clients and data order. Writes the runs, a
# per-round table and the figure OUT/confidence.png|svg.
#
# Rerunnable: a run that finished is kept, one that was interrupted after a finished round is
# resumed, and one that never finished a round (e.g. no data yet) is started afresh. Offline,
# point flwbc at the datasets first: export FLWBC_DATA_DIR=/path/to/data.
# Extra flags for every run (e.g. --engine sequential --threads 1) go in $FLAGS.
set -euo pipefail
SEED=${SEED:-0}
OUT=${OUT:-runs/headline}
WARMUP=${WARMUP:-40}
AFTER=${AFTER:-12}
read -r -a EXTRA <<< "${FLAGS:-}"

finished() { grep -qs '"complete": true' "$1/summary.json" && [ -f "$1/model.safetensors" ]; }

step() {  # step NAME FLAG...: run NAME once; finish it if an earlier attempt was interrupted
  local name=$1 dir="$OUT/$1"
  shift
  if finished "$dir"; then
    echo "$name: finished earlier, kept ($dir)"
  elif [ -f "$dir/checkpoint.safetensors" ]; then
    flwbc run --resume "$dir"
  else
    flwbc run "$@" ${EXTRA[@]+"${EXTRA[@]}"} --seed "$SEED" --out "$OUT" --name "$name"
  fi
}

step "warmup-s$SEED" --rounds "$WARMUP" --attack-prob 0
for defense in none wbc; do
  step "$defense-s$SEED" --init-model "$OUT/warmup-s$SEED/model.safetensors" \
    --rounds "$AFTER" --attack-rounds 1 --client-defense "$defense" --wbc-s 0.4
done
flwbc compare "$OUT/none-s$SEED" "$OUT/wbc-s$SEED"
if python -c "import matplotlib" 2>/dev/null; then
  python "$(dirname "$0")/plot_headline.py" "$OUT" "$OUT/confidence" none wbc
else
  echo "figure skipped: matplotlib is not installed (pip install -e .[plots])"
fi
