# Helpers shared by all rules: config validation, paths, params.
import json
import os
import sys
from pathlib import Path

REPO = Path(workflow.basedir).resolve()
SRC = REPO / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
# Jobs run `python -m prunebench`: make the package importable from this checkout and
# prefer the interpreter that runs Snakemake (conda envs still come first when used).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

from prunebench import config as pbconfig  # noqa: E402
from prunebench import paths  # noqa: E402
from prunebench.gpus import count_without_torch  # noqa: E402

#: what each methods entry's method declares that the rules read (needs_calibration, wants_gpu, ...)
METHOD_NEEDS = {}
try:
    # a config that passed once on this code is not checked across keys again (fast start-up)
    pbconfig.validate(config, check_cuda=False, stamp_dir=".snakemake/prunebench-validated", needs=METHOD_NEEDS)
except pbconfig.ConfigError as exc:
    raise WorkflowError(str(exc))


onstart:
    # CUDA demanded on a machine without it is refused before any job runs -- not on a dry
    # run (onstart does not run then), not when jobs go to a cluster (no GPU on the login node).
    if workflow.local_exec and not workflow.remote_exec:
        _errs = pbconfig.cuda_errors(config)
        if _errs:
            raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_errs))


# every output of this config under results/<experiment>/; downloads and compiled kernels
# shared by all experiments under results/cache/ (prunebench.paths says why)
RESULTS = paths.experiment_dir(config["experiment"])
CACHE = paths.cache_dir()
PY = "python -m prunebench"


def J(obj):
    """A params value as compact JSON (passed to the CLI, quoted with :q)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


#: the keys of a model's entry that the source stage reads (prunebench.source,
#: prunebench.models.sources.load_source: the seed only for random weights) and that the data
#: stage reads (prunebench.data: tokenizer, or vocabulary size for random token ids); the dtype
#: reaches the source job as a param of its own, and budgets and the figure's label reach neither
SPEC_KEYS = {"source": ("weights", "path", "gguf_file", "tokenizer", "architecture", "seed"),
             "data": ("weights", "path", "gguf_file", "tokenizer", "architecture")}


def model_spec(model, stage):
    """The part of the model's entry that ``stage``'s job reads, so that a change of anything
    else (a new budget, the family label) reruns no source or data job."""
    spec = config["models"][model]
    keys = [k for k in SPEC_KEYS[stage] if k != "seed" or spec["weights"] == "random"]
    return J({k: spec[k] for k in keys if k in spec})


#: file names of weights in a model folder (what the data stage, which reads the tokenizer, skips)
WEIGHT_FILES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".index.json")


def local_files(model, stage):
    """The local files ``stage``'s job reads for ``model``, as inputs, so that an edit reruns it
    (hub ids: none).  source: a local folder's files (its GGUF file; for random weights its
    config.json) and a local tokenizer's; data: the tokenizer's files only (a folder's files
    other than weights; GGUF: the tokenizer the source job saved, an input of its own) and, for
    random weights, the config.json that gives the vocabulary."""
    from prunebench.pkgdata import resolve_path

    spec, found = config["models"][model], []
    for key in ("path", "tokenizer"):
        root = resolve_path(spec[key]) if spec.get(key) else None
        if root is None or not os.path.isdir(root):
            continue
        if key == "path" and spec["weights"] == "gguf":
            found += [os.path.join(root, spec["gguf_file"])] if stage == "source" else []
            continue
        if key == "path" and spec["weights"] == "random":  # the architecture (data: the vocabulary)
            cfg = os.path.join(root, "config.json")
            found += [cfg] if not spec.get("architecture") and os.path.isfile(cfg) else []
            continue
        files = sorted(str(p) for p in Path(root).iterdir() if p.is_file())
        found += files if stage == "source" else [f for f in files if not f.endswith(WEIGHT_FILES)]
    return [literal(f) for f in found]


def literal(path):
    """``path`` as an input Snakemake reads literally (braces are not wildcards)."""
    return str(path).replace("{", "{{").replace("}", "}}")


def method_spec(variant):
    """The methods entry of a pruned model's folder name (method or method@budget)."""
    return J(config["methods"][pbconfig.split_variant(variant)[0]])


def variant_budget(model, variant):
    """The budget config of a pruned model's folder name (null for dense)."""
    return J(pbconfig.variant(config, model, variant)["budget"])


def eval_data(model):
    """The evaluation windows of every evaluation corpus: {corpus: path}."""
    return {c: f"{RESULTS}/data/{model}/eval-{c}.safetensors" for c in pbconfig.eval_corpora(config)}


def gpu_resources(device):
    """gpu=1 for jobs that will use CUDA (local profile caps them at one at a time)."""
    if device == "cuda":
        return 1
    if device == "auto":
        if workflow.non_local_exec:  # cluster: the login node's GPUs say nothing about the compute nodes'
            return 1
        return 1 if count_without_torch() else 0
    return 0


def bench_threads(device):
    """A benchmark cell's threads: every core on CPU; on a machine of N GPUs, 1/N of the cores
    each, so that N cells can run side by side but no other job beside them (a host-bound
    eager cell is slowed by any CPU work next to it).  On a cluster the profile's set-threads
    decides."""
    if workflow.non_local_exec:
        return 1
    cores = max(1, int(workflow.cores or 1))
    gpus = count_without_torch() if device in ("cuda", "auto") else 0
    return max(1, cores // gpus) if gpus else cores


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    method=pbconfig.VARIANT_PATTERN,  # a method, '@' and a budget tag in a sweep; 'base' is the source stage's folder
    corpus=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    backend=r"[a-z0-9-]+",
    in_len=r"\d+",
    out_len=r"\d+",
    batch=r"\d+",
    split=r"calibration|eval-[A-Za-z0-9][A-Za-z0-9._-]*",  # eval-<corpus>


def all_cells():
    return [paths.cell_path(RESULTS, c) for c in pbconfig.cells(config)]


def all_ppl():
    return [f"{RESULTS}/perplexity/{m}/{v['name']}.json" for m in config["models"] for v in pbconfig.variants(config, m)]


def all_reports():
    return [f"{RESULTS}/prune/{m}/{v['name']}.json" for m in config["models"] for v in pbconfig.variants(config, m)]


def all_variants():
    """{model: {folder name: {method, budget tag}}}: what the tables' method and budget columns say."""
    return {m: {v["name"]: {"method": v["method"], "budget": v["tag"]} for v in pbconfig.variants(config, m)}
            for m in config["models"]}
