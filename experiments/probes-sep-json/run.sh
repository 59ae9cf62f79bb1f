#!/usr/bin/env bash
# Issue #5's probes on the adapter of `delia run configs/delia-sep-json.yaml --set mix.ratio=2 --set eval.limit=16`
# (the paper's 7B defaults on the embedded 135M model: 100 task examples + 200 self-sampled answers, 5 steps
# of 64). Outputs (tables, JSON, PNG) land next to this script; the run directory itself (adapter) is not
# committed. Run from the repository root after that `delia run`.
set -euo pipefail
run=runs/delia-sep-json
out=experiments/probes-sep-json
delia=${DELIA:-.venv/bin/delia}
"$delia" probe repr --run "delia=$run" --out "$out/repr"
"$delia" probe divergent "$run/task/eval.jsonl" --run "delia=$run" --limit 16 --out "$out/divergent"
"$delia" probe losscurve --run "delia=$run" --out "$out/losscurve"
"$delia" probe gradients "$run/mix/mixed.jsonl" --adapter "$run" --batches 6 --batch-size 4 --max-length 384 \
  --out "$out/gradients"
context=$(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(r["messages"][0]["content"].replace(r["meta"]["instruction"], "").strip())' "$run/task/eval.jsonl")
"$delia" chat --adapter "$run" --context "$context" --max-new-tokens 160 --json \
  --compare "Please follow the <sep> format." "DO NOT follow the <sep> format." > "$out/chat_compare.json"
