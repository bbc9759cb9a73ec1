#!/usr/bin/env bash
# Run the pipeline on an offline, time-limited GPU node, resuming from an earlier run.
#
#   STATE=run-state.tar.gz TIME_LIMIT=540 PACK_TO=outdir scripts/device_run.sh <snakemake args...>
#   (on a machine of N GPUs: add --cores N --resources gpu=N; each cell takes its own GPU)
#
# 1. installs the wheels of .whl/ (made by `prunebench bundle --target-freeze <its pip freeze>`)
#    into /tmp/site;
# 2. unpacks $STATE (default run-state.tar.gz: results/ and .snakemake/ metadata of the last
#    run, mtimes kept) so Snakemake resumes where the last run stopped -- unless this node's
#    results/ already come from a later run (results/.slice, a counter);
# 3. runs snakemake with the given arguments (and --rerun-incomplete) for at most TIME_LIMIT s;
# 4. packs results/ and .snakemake/metadata into $PACK_TO/run-state.tar.gz (even when snakemake
#    failed or was stopped), so the next run gets every finished cell.
set -uo pipefail
cd "$(dirname "$0")/.."
# a node reused since the last run still has the wheels and results/ of that run
if [ ! -f /tmp/site/.prunebench-wheels ] || [ .whl -nt /tmp/site/.prunebench-wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    touch /tmp/site/.prunebench-wheels
fi
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PATH=/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# results/.slice counts the slices that built this state; unpack the carried state unless
# this (warm) machine already holds the same or a later one
here=$(cat results/.slice 2>/dev/null || echo 0)
STATE=${STATE:-run-state.tar.gz}
if [ -f "$STATE" ]; then
    carried=$(tar -xzOf "$STATE" results/.slice 2>/dev/null || echo 0)
    if (( carried >= here )) && (( carried > 0 || here == 0 )); then
        tar -xzf "$STATE"
        echo "resumed slice $carried: $(find results/*/bench -name '*.json' 2>/dev/null | wc -l) cells already there"
    else
        echo "warm machine: keeping its slice $here (carried state is slice $carried)"
    fi
fi
pack() {
    [ -n "${PACK_TO:-}" ] || return 0
    mkdir -p results && echo $(( $(cat results/.slice 2>/dev/null || echo 0) + 1 )) > results/.slice
    mkdir -p "$PACK_TO" && tar -czf "$PACK_TO/run-state.tar.gz" --exclude='results/*/models/*/*/model.safetensors' \
        --exclude='results/cache' results .snakemake/metadata .snakemake/incomplete 2>/dev/null
    ls -la "$PACK_TO"
}
trap pack EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# --rerun-incomplete: the cells the last run's time limit interrupted are marked incomplete, and
# Snakemake would otherwise refuse to start at all
timeout -s INT "${TIME_LIMIT:-540}" python3 -m snakemake --rerun-incomplete "$@"
