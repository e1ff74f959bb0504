#!/usr/bin/env bash
# The half-moons experiment (thesis Fig. 4.7) through the CLI's default recipe, for several seeds:
# ADGM and M2, 10 epochs each, 6 labels, batch normalisation as in the authors' code. Every run writes
# runs/halfmoons/MODEL-seedS/{model.pt,metrics.json}; the metrics are then copied to
# dgmlab/pretrained/halfmoons-seeds/ (small JSON files read by the half-moons page and the results page),
# and the first seed's checkpoints become the shipped adgm-halfmoons / m2-halfmoons.
# Usage: bash scripts/halfmoons_seeds.sh [SEED ...]   (default: 11 12 13 14 15, seeds no setting was tuned on)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=("${@:-11 12 13 14 15}")
read -r -a SEEDS <<< "${SEEDS[*]}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DGMLAB_PROGRESS=0
dest=dgmlab/pretrained/halfmoons-seeds
mkdir -p "$dest"
for seed in "${SEEDS[@]}"; do
  for model in adgm m2; do
    out=runs/halfmoons/$model-seed$seed
    $PY -m dgmlab train "$model" --data halfmoons --labels 6 --seed "$seed" --device cpu --out "$out" \
      --no-progress --fresh
    cp "$out/metrics.json" "$dest/$model-seed$seed.json"
  done
done
first=${SEEDS[0]}
$PY scripts/export_pretrained.py "runs/halfmoons/adgm-seed$first:adgm-halfmoons" "runs/halfmoons/m2-seed$first:m2-halfmoons"
