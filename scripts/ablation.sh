#!/usr/bin/env bash
# The meta-objective ablation of docs/results.md: geodesic-target datasets, three learned optimizers per task
# (L2L loss only, geodesic imitation only, mixed with lambda = 0.05; on digits_mlp also the loss objective on the
# dataset windows, the control), then the two comparisons.
# Every stage resumes: rerun after a kill and finished work is reused. Outputs under runs/.
#   bash scripts/ablation.sh            (about an hour on one CPU core)
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
device="${DEVICE:-cpu}"
resume_or_out() {  # a finished or killed run continues with resume=, a new one starts with out=
  if [ -f "$1/checkpoints/last.pt" ]; then echo "resume=$1"; else echo "out=$1"; fi
}
metaopt targets configs/metaopt/targets/digits_mlp.yaml seeds=32 out=runs/targets-digits32 device="$device"
metaopt targets configs/metaopt/targets/poly_cubic.yaml seeds=16 out=runs/targets-cubic16 device="$device"
for task in digits_mlp poly_cubic; do
  if [ "$task" = digits_mlp ]; then
    loss_args=(episodes=120 meta_batch=4 val_every=20 val_seeds=5 tune_seeds=3)  # 5 meta-steps per episode: 600
  else
    loss_args=()  # configs/metaopt/poly_cubic.yaml: 40 episodes x 15 truncations = 600 meta-steps
  fi
  metaopt train "configs/metaopt/$task.yaml" "${loss_args[@]}" device="$device" \
    "$(resume_or_out "runs/ablation/$task-loss")"
  metaopt train "configs/metaopt/geodesic/$task.yaml" objective.options.loss_weight=0.0 device="$device" \
    "$(resume_or_out "runs/ablation/$task-geodesic")"
  metaopt train "configs/metaopt/geodesic/$task.yaml" objective.options.loss_weight=0.05 device="$device" \
    "$(resume_or_out "runs/ablation/$task-mixed")"
  if [ "$task" = digits_mlp ]; then  # the control: the loss objective on the dataset windows, no imitation
    metaopt train "configs/metaopt/geodesic/$task.yaml" objective.name=loss device="$device" \
      "$(resume_or_out "runs/ablation/$task-loss-windows")"
  fi
  metaopt compare "configs/compare/ablation_$task.yaml" out="runs/ablation-$task" device="$device"
done
