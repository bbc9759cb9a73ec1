#!/usr/bin/env bash
# Run the pipeline on the offline GPU machine, resuming from an earlier slice.
#
#   scripts/device_run.sh <snakemake args...>
#   (on a machine of N GPUs: add --cores N --resources gpu=N; each cell takes its own GPU)
#
# 1. installs the wheels of .whl/ (scripts/device_wheels.sh) into /tmp/site;
# 2. unpacks .device/state.tar.gz (results/ and .snakemake/ metadata of the last slice,
#    mtimes kept) so Snakemake's cache resumes where the last slice stopped -- unless the
#    machine is still warm from a call that got further (results/.slice, a counter);
# 3. runs snakemake with the given arguments (and --rerun-incomplete);
# 4. packs results/ and .snakemake/metadata into $OUT/state.tar.gz (even when snakemake
#    failed or was stopped), so the next slice, and this machine's owner, get every cell.
set -uo pipefail
cd "$(dirname "$0")/.."
# a warm machine (a call within its idle window) still has the wheels and results/ of the last call
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
if [ -f .device/state.tar.gz ]; then
    carried=$(tar -xzOf .device/state.tar.gz results/.slice 2>/dev/null || echo 0)
    if (( carried >= here )) && (( carried > 0 || here == 0 )); then
        tar -xzf .device/state.tar.gz
        echo "resumed slice $carried: $(find results/bench -name '*.json' 2>/dev/null | wc -l) cells already there"
    else
        echo "warm machine: keeping its slice $here (carried state is slice $carried)"
    fi
fi
pack() {
    [ -n "${OUT:-}" ] || return 0
    mkdir -p results && echo $(( $(cat results/.slice 2>/dev/null || echo 0) + 1 )) > results/.slice
    tar -czf "$OUT/state.tar.gz" --exclude='results/models/*/*/model.safetensors' \
        --exclude='results/cache' results .snakemake/metadata .snakemake/incomplete 2>/dev/null
    ls -la "$OUT"
}
trap pack EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# --rerun-incomplete: the cells the last slice's end interrupted are marked incomplete, and
# Snakemake would otherwise refuse to start at all
timeout -s INT "${SLICE_SECONDS:-540}" python3 -m snakemake --rerun-incomplete "$@"
