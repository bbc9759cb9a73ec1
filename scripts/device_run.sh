#!/usr/bin/env bash
# Run the pipeline on the offline GPU machine, resuming from an earlier slice.
#
#   scripts/device_run.sh <snakemake args...>
#
# 1. installs the wheels of .whl/ (scripts/device_wheels.sh) into /tmp/site;
# 2. unpacks .device/state.tar.gz (results/ and .snakemake/ metadata of the last slice,
#    mtimes kept) so Snakemake's cache resumes where the last slice stopped;
# 3. runs snakemake with the given arguments;
# 4. packs results/ and .snakemake/metadata into $OUT/state.tar.gz (even when snakemake
#    failed or was stopped), so the next slice, and this machine's owner, get every cell.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PATH=/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -f .device/state.tar.gz ]; then
    tar -xzf .device/state.tar.gz
    echo "resumed: $(find results/bench -name '*.json' 2>/dev/null | wc -l) cells already there"
fi
pack() {
    [ -n "${OUT:-}" ] || return 0
    tar -czf "$OUT/state.tar.gz" --exclude='results/models/*/*/model.safetensors' \
        --exclude='results/cache' results .snakemake/metadata .snakemake/incomplete 2>/dev/null
    ls -la "$OUT"
}
trap pack EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout -s INT "${SLICE_SECONDS:-540}" python3 -m snakemake "$@"
