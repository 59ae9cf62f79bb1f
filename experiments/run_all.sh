#!/usr/bin/env bash
# Run (or resume) every committed experiment, in priority order. Each step skips its finished cells, so
# rerunning this script continues where it stopped. Logs: experiments/run_all.log (git-ignored).
#   nohup experiments/run_all.sh > experiments/run_all.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
delia=.venv/bin/delia
step() { echo "=== $(date -Is) $*"; "$@" || echo "=== step failed (exit $?): $*"; }
step "$delia" experiment configs/experiments/sep-json.yaml
# From scratch, one training cell again: does it reproduce its stored value within the CI?
step "$delia" experiment configs/experiments/sep-json.yaml --recheck common_it__n30__s0
step "$delia" experiment configs/experiments/ratio-search.yaml --search ratio
step "$delia" experiment configs/experiments/translation.yaml
echo "=== $(date -Is) all steps done"
