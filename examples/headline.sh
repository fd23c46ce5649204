#!/usr/bin/env bash
# The headline experiment: Fashion-MNIST IID, a trained model, one forced adversarial round
# (5 of 10 clients malicious, one image in D_M), run without defense and with FL-WBC (s = 0.4)
# from the same saved model with the same clients and data order. About 8 minutes on 2 cores
# (estimated from the benchmark's 7.3 s per batched E=10/B=10 round).
set -euo pipefail
SEED=${SEED:-0}
OUT=${OUT:-runs/headline}
WARMUP=${WARMUP:-40}
AFTER=${AFTER:-12}
flwbc run --seed "$SEED" --rounds "$WARMUP" --attack-prob 0 --out "$OUT" --name "warmup-s$SEED"
for defense in none wbc; do
  flwbc run --seed "$SEED" --init-model "$OUT/warmup-s$SEED/model.safetensors" \
    --rounds "$AFTER" --attack-rounds 1 --client-defense "$defense" --wbc-s 0.4 \
    --out "$OUT" --name "$defense-s$SEED"
done
flwbc compare "$OUT/none-s$SEED" "$OUT/wbc-s$SEED"
