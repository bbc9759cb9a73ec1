#!/usr/bin/env bash
# Time variants of the compiled backend on one model shape (random weights), batch 1, against
# the weight-streaming roofline: one JSON line per variant ("time ..."), plus a kernel profile
# ("profile ...") for the first and the last.  Stops starting new variants after
# BUDGET_SECONDS (default 500).  GPU only.
#
#   [SET=table|next] scripts/backend_variants.sh [MODEL] [BATCH]      # default: table, llama-7b 1
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
model=${1:-llama-7b} batch=${2:-1}
start=$SECONDS
CDT='inductor={"coordinate_descent_tuning": true}'
NOTUNE='inductor={}'
case "${SET:-table}" in
table)  # the variants table of docs/reproduction.md (untuned = the first session's backend)
    variants=(
        "--option '$NOTUNE' --profile"
        "--option gemv=reduce --option '$CDT' --profile"
        "--option '$CDT'"
        "--option gemv=reduce --option '$NOTUNE'"
        "--option '$NOTUNE' --attn sdpa"
    ) ;;
next)   # is the tuned result stable from one compilation to the next, does the order of the
        # runs matter (untuned first and last), does SDPA add to the tuning?
    variants=(
        "--option '$NOTUNE' --profile"
        "--profile"                                  # the default (tuned)
        ""                                           # the default again: a second compilation
        "--attn sdpa"
        "--option '$NOTUNE'"                         # untuned again, last
    ) ;;
*) echo "SET must be table or next" >&2; exit 2 ;;
esac
for v in "${variants[@]}"; do
    if (( SECONDS - start > ${BUDGET_SECONDS:-500} )); then echo "skipped (budget): $v"; continue; fi
    echo "== variant: $v"
    eval ${PY:-python3} -m prunebench.backends --config config.yaml --model "$model" --dtype float16 \
        --batch "$batch" --time 5 --skip-eager --no-check "$v" 2>&1 | grep -E '^(time|profile|check)|Error|error' | cut -c1-3000
done
