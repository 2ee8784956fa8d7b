#!/usr/bin/env bash
# Every GPU figure of docs/results.md, in one run on a machine with an NVIDIA GPU:
#
#   bash benchmarks/gpu.sh                     # outputs under runs/gpu
#   OUT=/some/dir PYTHON=.venv/bin/python bash benchmarks/gpu.sh
#
# Writes $OUT/environment.txt (nvidia-smi, torch and CUDA versions, commit) first, then appends one JSON line per
# measurement to $OUT/gpu.jsonl (a failed or timed-out step appends {"step": ..., "exit_status": ...} and the script
# goes on); each step's stderr goes to $OUT/<step>.log. Nothing is downloaded: the tasks' data ship with the repo.
#
# What it measures, all with --device cuda at small but meaningful sizes:
#   curve_throughput  batched curve evaluation vs one model at a time (512 and 2048 models; vmap and bmm), share of matmul peak
#   es_population     ES / PES population, particle after particle vs one vmap call per inner step
#   es_population_stack  four optimizees of one task: each population vmapped alone vs all in one call (population=stack)
#   gemm_share        batched loss, gradient and bead step per ParamSpace strategy against the device's matmul peak
#   strategy_speed    whole connect runs, vmap vs the exact loop strategy
#   connect_speed     connect vs the reference-style and the optimized sequential DSS loops
#   connect_memory    torch.cuda.max_memory_allocated of connect on digits_cnn
#   finders           the five path finders on one pair per task (capped at 10 s each)
#   compare_sweep     the metaopt compare sweep, batched vs one run at a time (quadratic, 235 runs)
#   learned_meta      meta-training throughput, one batched LSTM call vs one per tensor
#   learned_dropin    learned optimizer step cost vs Adam, a size sweep from 10k to 10M parameters
#   learned_meta_stack  family meta-training, the meta-batch one optimizee after another vs stacked (inner steps/s),
#                     and the start offsets taken one by one vs together
#   learned_meta_compile  one-task meta-training, the loop through higher vs compiled steps (compile: true; the
#                     warm-up round compiles, on a GPU with triton)
#   learned_dropin_tiny the tiny rule's eager drop-in step (whole-vector path on an accelerator), 100k to 10M
#   learned_dropin_family_v1  the shipped family-v1 rule, eager and compiled, 1M and 10M (about 1-2 minutes compiling)
#   learned_dropin_family_v2  the shipped family-v2 rule (Newton-Schulz on each matrix: matmuls, where a GPU is fast)
#   learned_dropin_family_v3  the shipped family-v3 rule (groups of 256 rows), with groups of 64 in bfloat16 and on their Gram matrix, beside Muon
#   learned_dropin_transformer  family-v3 and Muon on 4-block character transformers of 824k and 10M parameters
#                     (32 windows of 32 characters), eager and compiled: the step and the training step against Adam's
#   orthogonalize     Newton-Schulz on the Gram matrix vs the standard iteration, the block shapes of the size sweep
#   threads           host threads 1 vs 2 with the model on the GPU
#   distributed       whole commands: geodesics sweep, metaopt train, metaopt targets (1 rank; 2 ranks with >= 2 GPUs)
#   census_cnn        the curvature census (metaopt census) on digits_cnn at 10 seeds, its report under $OUT/census-cnn
#
# Runtime on one H200, measured once (docs/results.md, "On one NVIDIA H200"): the first 11 steps took 450 s, with
# gemm_share and compare_sweep cut by their timeouts, which are now longer; plan on about 12 minutes in all with the
# transformer step added since, so a 15-minute device budget holds the machine's start and one run with a few steps
# skipped. Every step has its own timeout; the total is the last line of gpu.jsonl. Steps whose figures are already in
# docs/results.md can be skipped: SKIP="curve_throughput finders"; ONLY="learned_meta_stack learned_dropin_tiny" runs
# just those.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu}"
PYTHON="${PYTHON:-python}"
LOG="$OUT/gpu.jsonl"
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

{
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    nvidia-smi || echo "nvidia-smi failed (exit $?)"
    "$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda)'
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu.sh: torch sees no CUDA device; nothing measured (see $OUT/environment.txt)" >&2
    exit 2
fi

started=$(date +%s)

# step NAME SECONDS SCRIPT ARGS...: one benchmark under a timeout, its JSON lines appended to $LOG.
step() {
    local name=$1 limit=$2 script=$3
    shift 3
    if [[ " ${SKIP:-} " == *" $name "* ]] || { [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; }; then
        echo "== $name skipped (SKIP or ONLY)" >&2
        return 0
    fi
    local t0 rc=0
    t0=$(date +%s)
    echo "== $name (limit ${limit}s)" >&2
    timeout --kill-after=10 "$limit" "$PYTHON" "benchmarks/$script" --device cuda "$@" \
        > "$OUT/$name.jsonl" 2> "$OUT/$name.log" || rc=$?
    cat "$OUT/$name.jsonl" >> "$LOG"
    printf '{"step": "%s", "exit_status": %d, "step_seconds": %d}\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$LOG"
    if [ "$rc" -ne 0 ]; then
        echo "   $name exited $rc; last lines of $OUT/$name.log:" >&2
        tail -n 5 "$OUT/$name.log" >&2 || true
    fi
}

step curve_throughput 60 curve_throughput.py --tasks digits_mlp digits_cnn charlm
step curve_throughput_2048 45 curve_throughput.py --tasks digits_mlp digits_cnn --segments 32 --points 64
step curve_throughput_bmm 30 curve_throughput.py --tasks digits_mlp --strategy bmm
step gemm_share 90 gemm_share.py --models 256 --repeats 4
step strategy_speed 60 strategy_speed.py --tasks poly_cubic digits_mlp --repeats 2
step connect_speed 120 connect_speed.py --tasks poly_cubic digits_mlp
step connect_memory 60 connect_memory.py --thresholds 0.5 0.2
step finders 120 finders.py --tasks poly_cubic digits_mlp --max-seconds 10
step compare_sweep 120 compare_sweep.py --config compare/quadratic.yaml tuning_seeds=3 eval_seeds=20
step learned_meta 45 learned_meta_speed.py --episodes 2 --steps 100 --truncation 20
step es_population 45 es_population.py --task digits_mlp --repeats 2
step es_population_stack 60 es_population.py --task digits_mlp --rules mlp tiny --optimizees 4 --pairs 4 --repeats 2
step learned_dropin 90 learned_dropin_speed.py --sizes 10000 100000 1000000 10000000 --rules mlp lstm --repeats 2
step learned_meta_rules 60 learned_meta_speed.py --rules lstm mlp --estimators backprop --steps 40 --truncation 20 --meta-batch 2 --repeats 1
step learned_meta_stack 200 learned_meta_speed.py --configs configs/metaopt/family.yaml configs/metaopt/family_v2.yaml configs/metaopt/digits_mlp.yaml configs/metaopt/family_v7.yaml --episodes 1 --repeats 2 --offset-episodes 3
step learned_meta_compile 150 learned_meta_speed.py --configs configs/metaopt/digits_mlp.yaml --rules lstm tiny --modes loop compile --episodes 1 --repeats 2
step learned_dropin_tiny 90 learned_dropin_speed.py --rules tiny tiny:learned_tensors=hidden --sizes 100000 1000000 10000000 --repeats 2
step learned_dropin_family_v1 150 learned_dropin_speed.py --rules family-v1 --compile --sizes 1000000 10000000 --repeats 2
step learned_dropin_family_v2 90 learned_dropin_speed.py --rules family-v2 --sizes 100000 1000000 10000000 --repeats 2
step learned_dropin_family_v3 150 learned_dropin_speed.py --rules family-v3 family-v3:ns_block=64,ns_dtype=bfloat16 family-v3:ns_block=64,ns_method=gram --muon --sizes 1000000 10000000 --repeats 2
step learned_dropin_transformer 150 learned_dropin_speed.py --model transformer --batch 32 --rules family-v3 --compile --muon --sizes 823911 10000000 --repeats 2
step orthogonalize 60 orthogonalize_speed.py --repeats 3
step threads 30 threads.py --tasks digits_mlp digits_cnn --threads 1 2 --steps 50 --repeats 2
step distributed 120 distributed.py --ranks 1 2 --repeats 1 --workloads sweep train targets

# The curvature census on the convnet at more seeds (a science run, not a benchmark: its report is the result).
if [[ " ${SKIP:-} " != *" census_cnn "* ]] && { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" census_cnn "* ]]; }; then
    echo "== census_cnn (limit 240s)" >&2
    t0=$(date +%s) rc=0
    timeout --kill-after=10 240 "$PYTHON" -m metaopt census metaopt/census/census.yaml "tasks=[{name: digits_cnn}]" \
        seeds=10 device=cuda out="$OUT/census-cnn" > "$OUT/census_cnn.log" 2>&1 || rc=$?
    printf '{"step": "census_cnn", "exit_status": %d, "step_seconds": %d}\n' "$rc" "$(( $(date +%s) - t0 ))" >> "$LOG"
fi

printf '{"step": "total", "seconds": %d}\n' "$(( $(date +%s) - started ))" >> "$LOG"
echo "gpu.sh: done in $(( $(date +%s) - started )) s; JSON lines in $LOG" >&2
