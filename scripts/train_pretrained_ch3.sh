#!/usr/bin/env bash
# Rebuilds the checkpoints that chapter 3 loads (dgmlab/pretrained/vae-mnist and dgmlab/pretrained/vae2d-mnist).
#
# These are exactly the commands that produced the shipped files; each writes runs/NAME/model.pt and
# runs/NAME/metrics.json (command, seed, machine, wall-clock time, per-epoch history), and `eval` adds the
# importance-weighted test log-likelihood L_5000 to that metrics.json. The shipped model.pt is the trained checkpoint
# without the optimiser and random-number states (only needed to resume training), so that it stays small.
#
# Usage (from the repository root; about 1.5 hours on a shared 2-core CPU):
#   DGMLAB_DATA=../shared/data bash scripts/train_pretrained_ch3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DGMLAB_PROGRESS=0

# vae-mnist: 784-256-256 encoder, 50 latent units, Bernoulli decoder 50-256-256-784; dynamically binarised MNIST.
"$PYTHON" -m dgmlab train vae --data mnist --epochs 50 --seed 0 --device cpu --set z_dim=50 --set 'hidden=(256,256)' --set eval_iw=0 --out runs/vae-mnist --no-progress
"$PYTHON" -m dgmlab eval runs/vae-mnist/model.pt --iw 5000 --n-test 1000 --device cpu

# vae2d-mnist: 784-128-128 encoder, 2 latent units (for the latent-space plot and explorer).
"$PYTHON" -m dgmlab train vae --data mnist --epochs 30 --seed 0 --device cpu --set z_dim=2 --set 'hidden=(128,128)' --set eval_iw=0 --out runs/vae2d-mnist --no-progress
"$PYTHON" -m dgmlab eval runs/vae2d-mnist/model.pt --iw 5000 --n-test 1000 --device cpu

# Ship: weights, config and history (without the optimiser and RNG states), plus metrics.json.
"$PYTHON" scripts/export_pretrained.py runs/vae-mnist:vae-mnist runs/vae2d-mnist:vae2d-mnist
