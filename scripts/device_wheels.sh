#!/usr/bin/env bash
# Fill .whl/ (git-ignored, repo root) with the wheels needed to run prunebench on
# the offline GPU machine (Python 3.12, x86_64 manylinux), minus every package
# that machine already has.  Idempotent: .whl/ is wiped and rebuilt each run.
#
# On the device:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# Usage: scripts/device_wheels.sh        (PYTHON=/path/to/python to override)
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=.whl

WANTED=(
  snakemake==9.27.1
  snakemake-executor-plugin-slurm==2.8.0
  datasets==5.2.0
  torch-pruning==1.6.1
  gguf==0.19.0
  jsonschema
)

# Packages already installed on the device (normalised names; nvidia-* is a glob).
DEVICE_HAS="
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama
contourpy coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x
cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow
pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash
yarl zipp
"

# Prefer a local 3.12 interpreter so that environment markers are evaluated as
# on the device; the --platform/--python-version flags pick the wheels anyway.
if [[ -z "${PYTHON:-}" ]]; then
  cands=(python3.12)
  if command -v pyenv >/dev/null; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' || true); do
      cands=("$(pyenv root)/versions/$v/bin/python3.12" "${cands[@]}")
    done
  fi
  PYTHON=python3
  for c in "${cands[@]}"; do   # a pyenv shim may exist yet fail, so try it
    if "$c" -m pip --version >/dev/null 2>&1; then PYTHON=$c; break; fi
  done
fi
echo "using $("$PYTHON" --version 2>&1) ($PYTHON)"

norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/-/g'; }
on_device() {
  local n; n=$(norm "$1")
  [[ "$n" == nvidia-* ]] && return 0
  [[ " $(echo $DEVICE_HAS) " == *" $n "* ]]
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DL=$TMP/dl BUILT=$TMP/built
mkdir -p "$DL" "$BUILT"

PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any)

# Resolve with binaries only; whenever a requirement has no wheel (sdist-only,
# e.g. connection_pool), build a pure wheel for it and retry with it on hand.
built=()
for attempt in $(seq 1 30); do
  if "$PYTHON" -m pip download -q "${PLAT[@]}" --find-links "$BUILT" -d "$DL" \
       "${WANTED[@]}" >"$TMP/log" 2>&1; then
    break
  fi
  req=$(grep -oP 'No matching distribution found for \K\S+' "$TMP/log" | head -1 || true)
  if [[ -z "$req" ]] || [[ " ${built[*]-} " == *" $req "* ]]; then
    cat "$TMP/log" >&2; echo "pip download failed" >&2; exit 1
  fi
  echo "no wheel for $req: building from sdist"
  "$PYTHON" -m pip wheel -q --no-deps -w "$BUILT" "$req" >&2
  built+=("$req")
  [[ $attempt == 30 ]] && { echo "too many sdist-only deps" >&2; exit 1; }
done
for w in "$BUILT"/*.whl; do
  [[ -e "$w" ]] || continue
  case "$w" in
    *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
    *) echo "built wheel is not pure python: $w" >&2; exit 1 ;;
  esac
done

rm -rf "$OUT"
mkdir -p "$OUT"
declare -A seen=()
# Highest version first so that only one version of each package is kept.
while read -r w; do
  f=$(basename "$w"); n=$(norm "${f%%-*}")
  if on_device "$n"; then continue; fi
  [[ -n "${seen[$n]:-}" ]] && { echo "dropping extra version $f"; continue; }
  seen[$n]=1
  cp "$w" "$OUT/"
done < <(ls "$DL"/*.whl | sort -t- -k1,1 -k2,2Vr)

# Check: every requirement (recursively, extras skipped, markers evaluated for
# CPython 3.12 on linux x86_64) is in the bundle or on the device.
"$PYTHON" - "$OUT" "$(echo $DEVICE_HAS)" "${WANTED[@]}" <<'EOF'
import re, sys, zipfile, glob, os
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name as cn
out, device = sys.argv[1], set(sys.argv[2].split())
env = {"python_version": "3.12", "python_full_version": "3.12.0",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
       "platform_machine": "x86_64", "extra": ""}
meta = {}
for w in glob.glob(os.path.join(out, "*.whl")):
    with zipfile.ZipFile(w) as z:
        m = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(m).decode()
    name = cn(re.search(r"^Name: (.+)$", text, re.M).group(1).strip())
    meta[name] = [Requirement(r) for r in re.findall(r"^Requires-Dist: (.+)$", text, re.M)]
missing, todo, done = [], [cn(Requirement(r).name) for r in sys.argv[3:]], set()
while todo:
    n = todo.pop()
    if n in done: continue
    done.add(n)
    if n in meta:
        todo += [cn(r.name) for r in meta[n] if r.marker is None or r.marker.evaluate(env)]
    elif n not in device and not n.startswith("nvidia-"):
        missing.append(n)
if missing:
    sys.exit("MISSING (neither bundled nor on device): " + " ".join(sorted(missing)))
print(f"requirements check ok: {len(done)} packages reachable, none missing")
EOF

ls -1 "$OUT"
[[ ${#built[@]} -gt 0 ]] && echo "built from sdist: ${built[*]}"
echo "total: $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1) ($(du -sb "$OUT" | cut -f1) bytes)"
