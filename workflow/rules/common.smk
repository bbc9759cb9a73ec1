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

try:
    pbconfig.validate(config, check_cuda=False)
except pbconfig.ConfigError as exc:
    raise WorkflowError(str(exc))


onstart:
    # CUDA demanded on a machine without it is refused before any job runs -- not on a dry
    # run (onstart does not run then), not when jobs go to a cluster (no GPU on the login node).
    if workflow.local_exec and not workflow.remote_exec:
        _errs = pbconfig.cuda_errors(config)
        if _errs:
            raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_errs))


RESULTS = "results"
PY = "python -m prunebench"


def J(obj):
    """A params value as compact JSON (passed to the CLI, quoted with :q)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def model_spec(model):
    return J(config["models"][model])


def method_spec(method):
    return J(config["methods"][method])


def gpu_resources(device):
    """gpu=1 for jobs that will use CUDA (local profile caps them at one at a time)."""
    if device == "cuda":
        return 1
    if device == "auto":
        if workflow.non_local_exec:  # cluster: the login node's GPUs say nothing about the compute nodes'
            return 1
        try:
            import torch

            return 1 if torch.cuda.is_available() else 0
        except ImportError:
            return 0
    return 0


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    method=r"(?!base$)[A-Za-z0-9][A-Za-z0-9._-]*",  # 'base' is the source stage's folder
    corpus=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    backend=r"[a-z0-9-]+",
    in_len=r"\d+",
    out_len=r"\d+",
    batch=r"\d+",
    split=r"calibration|eval",


def cell_path(c):
    return (f"{RESULTS}/bench/{c['model']}/{c['method']}/{c['backend']}/"
            f"in{c['in_len']}_out{c['out_len']}_bs{c['batch']}.json")


def all_cells():
    return [cell_path(c) for c in pbconfig.cells(config)]


def all_ppl():
    return [f"{RESULTS}/perplexity/{m}/{meth}.json" for m in config["models"] for meth in config["methods"]]


def all_reports():
    return [f"{RESULTS}/prune/{m}/{meth}.json" for m in config["models"] for meth in config["methods"]]
