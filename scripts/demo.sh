#!/usr/bin/env bash
# The offline demo: install, then the whole pipeline on SmolLM2-135M on this CPU.
#   bash scripts/demo.sh [extra snakemake args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/snakemake --cores "${CORES:-2}" --configfile workflow/presets/demo.yaml \
    --replace-workflow-config "$@"
echo
echo "== results/tables/quality.csv =="; cat results/tables/quality.csv
echo "== figure: results/figures/throughput_latency.png =="
