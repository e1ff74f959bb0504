#!/usr/bin/env bash
# What batch normalisation does on the half-moons (thesis Fig. 4.7): the ADGM's default recipe with batch norm switched
# off, and with the six labelled points normalised by the running averages instead of their own batch statistics,
# for the seeds of scripts/halfmoons_seeds.sh. Metrics go to dgmlab/pretrained/halfmoons-ablation/ (read by the
# reproduction notes and the results page); runs to runs/halfmoons-ablation/.
# Usage: bash scripts/halfmoons_ablation.sh [SEED ...]   (default: 11 12 13 14 15)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
read -r -a SEEDS <<< "${*:-11 12 13 14 15}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DGMLAB_PROGRESS=0
dest=dgmlab/pretrained/halfmoons-ablation
mkdir -p "$dest"
for seed in "${SEEDS[@]}"; do
  for variant in "nobn:batch_norm=False" "running:bn_labelled=running"; do
    name=${variant%%:*}
    out=runs/halfmoons-ablation/adgm-$name-seed$seed
    $PY -m dgmlab train adgm --data halfmoons --labels 6 --seed "$seed" --device cpu --out "$out" \
      --set "${variant#*:}" --no-progress --fresh
    cp "$out/metrics.json" "$dest/adgm-$name-seed$seed.json"
  done
done
