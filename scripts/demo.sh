#!/usr/bin/env bash
# The offline demo: install, then the whole pipeline on SmolLM2-135M on this CPU.
#   bash scripts/demo.sh [extra snakemake args]
#   CORES=N     cores for Snakemake (default 2)
#   INSTALL=0   use .venv as it is (no pip, no network)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${INSTALL:-1}" = 0 ] || bash scripts/install.sh
.venv/bin/prunebench run demo --cores "${CORES:-2}" "$@"
out=results/demo  # the preset's experiment
echo
echo "== $out/tables/frontier.csv (perplexity, speed-up over dense, Pareto front) =="
cut -d, -f3,4,7,8,16,20 "$out/tables/frontier.csv"
echo
echo "$out/ takes $(du -sh "$out" | cut -f1) (model folders: $out/models/)"
echo "== what the demo made =="
for f in tables/benchmark.csv tables/quality.csv tables/speedups.csv tables/frontier.csv \
         figures/throughput_latency.png figures/throughput_latency.pdf \
         figures/quality_speed.png figures/quality_speed.pdf; do
    if [ -f "$out/$f" ]; then echo "  $PWD/$out/$f"; else echo "  $PWD/$out/$f (missing)"; fi
done
