#!/usr/bin/env bash
# The GPU job behind the README's figures: benchmark, then a time-boxed `flow` training run on
# shapes, then `tempoflow eval`. Usage (repo root, CUDA torch installed):
#     bash benchmarks/run_gpu.sh OUT_DIR [TRAIN_SECONDS] [extra config overrides...]
# The number of training steps is chosen from the measured bf16+compile speed so the run fits
# TRAIN_SECONDS, and the cosine schedule then spans exactly those steps.
set -euo pipefail
OUT=${1:-out/gpu}
BUDGET=${2:-360}
shift 2 || true
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
PY=${PYTHON:-python3}
"$PY" benchmarks/bench_flow.py --devices "${DEVICE:-cuda}" --json "$OUT/bench_gpu.json" "$@" 2>&1 | grep -v Loading
STEPS=$("$PY" -c "
import json; rows = json.load(open('$OUT/bench_gpu.json'))['rows']
sps = max(r['train_steps_per_s'] for r in rows)
print(max(500, int($BUDGET * sps * 0.85) // 500 * 500))")
echo "training for $STEPS steps"
"$PY" -m tempoflow.cli train shapes_flow out_dir="$OUT/run" train.steps="$STEPS" \
    train.compile="${COMPILE:-true}" device="${DEVICE:-cuda}" "$@" 2>&1 | tr '\r' '\n' | grep -v "it/s"
"$PY" -m tempoflow.cli eval "$OUT/run" --out "$OUT/eval" eval.num_prompts="${PROMPTS:-48}" sample.num_per_prompt=4 \
    --device "${DEVICE:-cuda}" 2>&1 \
    | grep -v Loading
cp "$OUT/run/log.jsonl" "$OUT/eval/metrics.json" "$OUT/eval/report.html" "$OUT/eval/samples.gif" \
   "$OUT/eval/samples.safetensors" "$OUT/"
