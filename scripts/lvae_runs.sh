#!/usr/bin/env bash
# The runs behind chapter 5.1's Fig. 5.2 (log KL per unit against epoch, depth 5) and Fig. 5.3 (bounds against depth):
# four variants of the thesis' MNIST recipe (5 latent layers 64-32-16-8-4, MLPs 512-256-128-64-32, batches of 256,
# Adam 1e-3) at depths 1, 3 and 5, each through the CLI into runs/ch5/VARIANT-dDEPTH/.
#   VAE       : hvae, no batch normalisation, no warm-up
#   VAE+BN    : hvae, batch normalisation on every layer and on the mu / sigma heads
#   VAE+BN+WU : hvae, batch normalisation and KL warm-up over the first 200 epochs (the hvae recipe)
#   LVAE+BN+WU: lvae recipe
# An existing run is continued with --resume, so the script can be stopped and rerun across sessions.
# Usage: EPOCHS=200 JOBS=2 DEPTHS="5 3 1" DEVICE=cpu bash scripts/lvae_runs.sh [VARIANT ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-200}
JOBS=${JOBS:-2}
DEPTHS=${DEPTHS:-"5 3 1"}
DEVICE=${DEVICE:-cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DGMLAB_PROGRESS=0
# Offline machines: the staged data folder, as in the Makefile.
if [[ -z "${DGMLAB_DATA:-}" && -d ../shared/data/mnist ]]; then export DGMLAB_DATA="$(cd ../shared/data && pwd)"; fi
declare -A OPTS=(
  [vae]="hvae --set batch_norm=False --set batch_norm_heads=False --set warmup_epochs=0"
  [vae-bn]="hvae --set warmup_epochs=0"
  [vae-bn-wu]="hvae"
  [lvae-bn-wu]="lvae"
)
VARIANTS=("${@:-vae vae-bn vae-bn-wu lvae-bn-wu}")
read -r -a VARIANTS <<< "${VARIANTS[*]}"
commands=()
for depth in $DEPTHS; do
  for v in "${VARIANTS[@]}"; do
    [[ -n "${OPTS[$v]:-}" ]] || { echo "unknown variant $v; choose from ${!OPTS[*]}" >&2; exit 2; }
    out=runs/ch5/$v-d$depth
    resume=--fresh
    [[ -f $out/model.pt ]] && resume=--resume
    commands+=("$PY -m dgmlab train ${OPTS[$v]} --data mnist --set depth=$depth --set eval_iw=1 --epochs $EPOCHS \
--seed 0 --device $DEVICE --out $out --no-progress $resume > $out.log 2>&1")
  done
done
mkdir -p runs/ch5
printf '%s\n' "${commands[@]}" | xargs -P "$JOBS" -I{} sh -c '{}'
