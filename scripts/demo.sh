#!/usr/bin/env bash
# The offline demo: install, then the whole pipeline on SmolLM2-135M on this CPU.
#   bash scripts/demo.sh [extra snakemake args]
#   CORES=N     cores for Snakemake (default 2)
#   INSTALL=0   use .venv as it is (no pip, no network)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${INSTALL:-1}" = 0 ] || bash scripts/install.sh
.venv/bin/prunebench run demo --cores "${CORES:-2}" "$@"
res=results/demo  # the preset's experiment
echo
echo "== quality against speed ($res/tables/frontier.csv) =="
.venv/bin/python - "$res/tables/frontier.csv" <<'PY'
import csv, sys
keep = ["method", "budget", "corpus", "ppl", "speedup", "on_front"]  # picked by name, not position
print(",".join(keep))
for row in csv.DictReader(open(sys.argv[1])):
    print(",".join(row[k] for k in keep))
PY
echo
echo "disk used by $res/: $(du -sh "$res" | cut -f1), most of it the model folders in $res/models/"
echo "== what each stage's jobs cost (.venv/bin/prunebench costs demo) =="
.venv/bin/prunebench costs demo
echo
echo "== what the demo made =="
for f in tables/benchmark.csv tables/quality.csv tables/speedups.csv tables/frontier.csv \
         figures/throughput_latency.png figures/throughput_latency.pdf \
         figures/quality_speed.png figures/quality_speed.pdf; do
    if [ -f "$res/$f" ]; then echo "  $PWD/$res/$f"; else echo "  $PWD/$res/$f (missing)"; fi
done
