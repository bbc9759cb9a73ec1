#!/usr/bin/env bash
# The offline demo: install, then the whole pipeline on SmolLM2-135M on this CPU.
#   bash scripts/demo.sh [extra snakemake args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/snakemake --cores "${CORES:-2}" --configfile workflow/presets/demo.yaml \
    --replace-workflow-config "$@"
echo
echo "== results/tables/frontier.csv (perplexity, speed-up over dense, Pareto front) =="
cut -d, -f3,4,7,8,16,20 results/tables/frontier.csv
echo
echo "== what the demo made =="
for f in results/tables/benchmark.csv results/tables/quality.csv results/tables/speedups.csv \
         results/tables/frontier.csv results/figures/throughput_latency.png \
         results/figures/throughput_latency.pdf results/figures/quality_speed.png \
         results/figures/quality_speed.pdf; do
    if [ -f "$f" ]; then echo "  $PWD/$f"; else echo "  $PWD/$f (missing)"; fi
done
echo "  results/ takes $(du -sh results | cut -f1) (model folders: results/models/)"
