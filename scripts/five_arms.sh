#!/usr/bin/env bash
# The five-arm experiment (docs/results.md, "Does following bent geodesics help?"): learned optimizers
# meta-trained on the same digits_mlp windows (32 Adam runs of 100 steps, T = 20 every 10 steps) with
#   loss       the L2L loss of the window only
#   teacher    imitation of Adam's own iterates theta_t .. theta_{t+T}
#   chord      imitation of the `start` targets (the chord, every window has length 1)
#   bent       imitation of the `between q=0.25` targets (projection leg + DSS inside the level set)
#   bent_loss  bent + 0.05 x the loss
# and a sixth, chord_loss (chord + 0.05 x the loss: what `metaopt quickstart` trains), three meta-training seeds each, the same budget (EPISODES meta-steps of meta-batch 4), then one `metaopt compare`
# of the five arms' fifteen checkpoints beside tuned Adam and RMSProp on paired seeds, in distribution and held out, a
# second of the sixth arm beside the same tuned Adam, and the arm table (scripts/five_arms_table.py). Every stage resumes: rerun after a kill and finished work is reused.
#   bash scripts/five_arms.sh            (JOBS=2 runs two meta-trainings at a time; about an hour on 2 cores; EPISODES=600 by default)
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
device="${DEVICE:-cpu}"; jobs="${JOBS:-2}"; episodes="${EPISODES:-600}"; root="${ROOT:-runs/five}"
metaopt targets configs/metaopt/targets/digits_mlp.yaml seeds=32 out="$root/targets-start" device="$device"
metaopt targets configs/metaopt/targets/digits_mlp.yaml seeds=32 level=between q=0.25 \
  out="$root/targets-between" device="$device"
declare -A arm_args=(
  [loss]="targets=$root/targets-between objective.name=loss"
  [teacher]="targets=$root/targets-between objective.name=teacher objective.options.loss_weight=0.0"
  [chord]="targets=$root/targets-start objective.name=geodesic objective.options.loss_weight=0.0"
  [bent]="targets=$root/targets-between objective.name=geodesic objective.options.loss_weight=0.0"
  [bent_loss]="targets=$root/targets-between objective.name=geodesic objective.options.loss_weight=0.05"
  [chord_loss]="targets=$root/targets-start objective.name=geodesic objective.options.loss_weight=0.05"
)
for arm in loss teacher chord bent bent_loss chord_loss; do
  for seed in 0 1 2; do
    run="$root/$arm-s$seed"
    if [ -f "$run/checkpoints/last.pt" ]; then where="resume=$run"; else where="out=$run"; fi
    echo "metaopt train configs/metaopt/geodesic/digits_mlp.yaml ${arm_args[$arm]} seed=$seed episodes=$episodes \
val_every=100 device=$device $where > $run.log 2>&1"
  done
done | xargs -P "$jobs" -I{} bash -c "{}"
metaopt compare configs/compare/five_arms_digits_mlp.yaml out="$root/compare" device="$device" \
  > "$root/compare.log" 2>&1
metaopt compare configs/compare/five_arms_control_digits_mlp.yaml out="$root/compare-control" device="$device" \
  > "$root/compare-control.log" 2>&1
python scripts/five_arms_table.py "$root/compare" "$root/compare-control" --out "$root/arms.md"
