#!/usr/bin/env bash
# Time variants of the compiled backend on one model shape (random weights), batch 1, against
# the weight-streaming roofline: one JSON line per variant ("time ..."), plus a kernel profile
# ("profile ...") for the first and the last.  Starts no new variant once MAX_SECONDS
# (default 500) have passed.  GPU only.
#
#   [SET=table|next|triton] scripts/backend_variants.sh [MODEL] [BATCH]      # default: table, llama-7b 1
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
model=${1:-llama-7b} batch=${2:-1}
start=$SECONDS
CDT='inductor={"coordinate_descent_tuning": true}'
NOTUNE='inductor={}'
case "${SET:-table}" in
table)  # inductor's coordinate-descent tuning off and on, the GEMV as a generated reduction
        # (gemv=reduce), SDPA attention
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
triton) # the Triton GEMV (gemv=triton) and SDPA decode attention against the default, which
        # runs first and last (order effects); the GEMV microbenchmark first (7B, LLM-Pruner and
        # FLAP shapes), which also fills Triton's kernel cache for the variants
        ${PY:-python3} -m prunebench.tools.gemv_bench 12288x4096 4096x4096 22016x4096 4096x11008 32000x4096 \
            8064x4096 4096x2688 14262x4096 4096x7131 12552x4096 4096x6276 2>&1 | grep -E '^\{|Error|error'
        variants=(
            "--profile"                                  # the default
            "--option gemv=triton --option attention=sdpa --profile"
            "CHECK --option gemv=triton"                 # + greedy tokens against HF generate
            "--option attention=sdpa"
            ""                                           # the default again, last
        ) ;;
*) echo "SET must be table, next or triton" >&2; exit 2 ;;
esac
for v in "${variants[@]}"; do
    if (( SECONDS - start > ${MAX_SECONDS:-500} )); then echo "skipped (time limit): $v"; continue; fi
    echo "== variant: $v"
    check=--no-check
    if [[ $v == CHECK* ]]; then check=; v=${v#CHECK }; fi
    eval ${PY:-python3} -m prunebench.tools.selfcheck --config config.yaml --model "$model" --dtype float16 \
        --batch "$batch" --time 5 --skip-eager $check "$v" 2>&1 | grep -E '^(time|profile|check)|Error|error' | cut -c1-3000
done
