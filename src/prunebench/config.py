"""Config validation: JSON schema (with defaults) plus the checks a schema cannot express.

Every problem is reported as ``config key <dotted.path>: <what is wrong>``, all at once,
before Snakemake schedules any job.

Start-up cost: the checks across keys need the method registry, the model arithmetic and
the corpus sources, which import torch (seconds).  With ``stamp_dir`` (the Snakefile passes
``.snakemake/prunebench-validated``), a config that passed them is remembered by a hash of
the config and of this package's code: the next Snakemake run on the same config and code
checks only the schema (milliseconds) -- a no-op run imports neither torch nor transformers.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config has values the pipeline refuses."""


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _validator(schema: dict):
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = validators.extend(base, {"properties": set_defaults})
    return cls(schema)


def _copy(v):
    import copy

    return copy.deepcopy(v)


def schema_errors(config: dict, schema_path: str | os.PathLike = SCHEMA) -> list[str]:
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = []
    for err in sorted(_validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        errors.append(f"config key {_path(err.absolute_path)}: {err.message}")
    return errors


def semantic_errors(config: dict) -> list[str]:
    """Checks across keys; assumes the schema passed."""
    from .architecture import architecture_errors
    from .architecture import estimate_llama_params
    from .models import resolve_path

    errs: list[str] = []
    corpora = config["corpora"]
    for key in ("calibration", "perplexity"):
        name = config[key]["corpus"]
        if name not in corpora:
            errs.append(f"config key {key}.corpus: {name!r} is not an entry of corpora ({sorted(corpora)})")

    from .corpus import CorpusError, check_spec

    for name, spec in corpora.items():
        try:
            check_spec(spec)
        except CorpusError as exc:
            errs.append(f"config key corpora.{name}.{exc}")

    try:
        from .methods import REGISTRY, SETTINGS_SCHEMAS
    except ImportError as exc:  # pragma: no cover
        errs.append(f"cannot import the method registry: {exc}")
        REGISTRY, SETTINGS_SCHEMAS = {}, {}
    for name, spec in config["methods"].items():
        algo = spec["method"]
        if algo not in REGISTRY:
            errs.append(f"config key methods.{name}.method: unknown method {algo!r}; registered: {sorted(REGISTRY)}")
            continue
        sub = SETTINGS_SCHEMAS.get(algo)
        if sub:
            for err in _validator(sub).iter_errors({k: v for k, v in spec.items() if k != "method"}):
                errs.append(f"config key methods.{name}{'.' if err.absolute_path else ''}{_path(err.absolute_path) if err.absolute_path else ''}: {err.message}")

    for name, spec in config["models"].items():
        k = f"models.{name}"
        w = spec["weights"]
        if w in ("pretrained", "gguf") and not spec.get("path"):
            errs.append(f"config key {k}.path: required for weights {w!r} (hub id or local directory)")
        if w == "gguf":
            if not spec.get("gguf_file"):
                errs.append(f"config key {k}.gguf_file: required for weights 'gguf'")
            elif spec.get("path"):
                try:
                    folder = resolve_path(spec["path"])
                except FileNotFoundError as exc:
                    errs.append(f"config key {k}.path: {exc}")
                else:
                    if not (Path(folder) / spec["gguf_file"]).is_file():
                        errs.append(f"config key {k}.gguf_file: {spec['gguf_file']!r} not found in {folder}")
        if w == "random" and not spec.get("architecture"):
            local = spec.get("path") and Path(spec["path"]).joinpath("config.json").is_file()
            if not local:
                errs.append(f"config key {k}.architecture: weights 'random' needs the architecture (or path to a local folder with config.json)")
        arch = spec.get("architecture")
        if arch:
            errs += architecture_errors(arch, f"{k}.architecture")
            need = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"]
            missing = [x for x in need if x not in arch]
            if missing:
                errs.append(f"config key {k}.architecture: missing {missing}")
            else:
                for x in need:
                    if not isinstance(arch[x], int) or arch[x] < 1:
                        errs.append(f"config key {k}.architecture.{x}: must be a positive integer, got {arch[x]!r}")
                if not errs or all(f"{k}.architecture" not in e for e in errs):
                    dense = estimate_llama_params(arch)
                    p = spec["budget"].get("params")
                    if p is not None and p >= dense:
                        errs.append(f"config key {k}.budget.params: {p:,.0f} is not smaller than the dense model ({dense:,} parameters)")

    bench = config["benchmark"]
    t = bench.get("timing") or {}
    if t.get("min_runs", 1) > t.get("max_runs", t.get("min_runs", 1)):
        errs.append(f"config key benchmark.timing.max_runs: {t['max_runs']} is below min_runs ({t['min_runs']})")
    if t.get("warmup_runs", 0) > t.get("max_warmup_runs", t.get("warmup_runs", 0)):
        errs.append(f"config key benchmark.timing.max_warmup_runs: {t['max_warmup_runs']} is below "
                    f"warmup_runs ({t['warmup_runs']})")
    for key, pool in (("methods", config["methods"]), ("models", config["models"])):
        for item in bench.get(key) or []:
            if item not in pool:
                errs.append(f"config key benchmark.{key}: {item!r} is not an entry of {key} ({sorted(pool)})")
    return errs


def cuda_errors(config: dict) -> list[str]:
    wants = [k for k in ("benchmark", "pruning", "perplexity") if config.get(k, {}).get("device") == "cuda"]
    if not wants:
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return [f"config key {k}.device: 'cuda' is demanded but this machine has no CUDA device "
            "(use 'auto' or 'cpu', or submit to a GPU node)" for k in wants]


def _fingerprint(config: dict) -> str:
    """Hash of the config (defaults filled) and of the package's source files (path, size, mtime)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def validate(config: dict, *, check_cuda: bool = True, schema_path=SCHEMA,
             stamp_dir: str | os.PathLike | None = None) -> dict:
    """Fill defaults into ``config`` (in place) and raise ConfigError listing every problem.

    ``stamp_dir``: remember a config that passed the cross-key checks (module docstring)."""
    errs = schema_errors(config, schema_path)
    stamp = None
    if not errs and stamp_dir is not None:
        stamp = Path(stamp_dir) / _fingerprint(config)
        if stamp.exists():
            errs = []
        else:
            errs = semantic_errors(config)
            if not errs:
                stamp.parent.mkdir(parents=True, exist_ok=True)
                stamp.touch()
    elif not errs:
        errs = semantic_errors(config)
    if not errs and check_cuda:
        errs = cuda_errors(config)
    if errs:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errs))
    for name, spec in config["models"].items():
        spec.setdefault("family", name)
    return config


def merge(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` into ``base`` in place, recursively, as Snakemake merges config files."""
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


# --------------------------------------------------------------------------- derived values

def bench_models(config: dict) -> list[str]:
    return list(config["benchmark"].get("models") or config["models"])


def bench_methods(config: dict) -> list[str]:
    return list(config["benchmark"].get("methods") or config["methods"])


def cells(config: dict) -> list[dict]:
    b = config["benchmark"]
    return [
        dict(model=m, method=meth, backend=be, in_len=i, out_len=o, batch=bs)
        for m, meth, be, i, o, bs in itertools.product(
            bench_models(config), bench_methods(config), b["backends"], b["input_lengths"],
            b["output_lengths"], b["batch_sizes"])
    ]


def families(config: dict) -> dict[str, str]:
    return {name: spec.get("family", name) for name, spec in config["models"].items()}
