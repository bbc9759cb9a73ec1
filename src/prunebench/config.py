"""Config validation: JSON schema (with defaults) plus the checks a schema cannot express.

Every problem is reported as ``config key <dotted.path>: <what is wrong>``, all at once,
before Snakemake schedules any job: the schema's (an integer is an int, not 2.0) and those
of the checks across keys, which run on every part of the config the schema passed.  Those
checks: corpus names exist and corpus specs are complete (``files``: every file exists);
methods are registered and their settings pass the method's schema; model paths are local
folders or well-formed hub ids; architectures have only keys of their config class and
build on the meta device (:mod:`prunebench.architecture`); budgets are finite, at least one
parameter, below the dense model and inside every method's reachable range
(:func:`prunebench.methods.budget_problem`); benchmark subsets name existing entries;
where a model's config is known (``architecture``, a local folder), no token length exceeds
its context (``max_position_embeddings``): calibration and perplexity windows, and a
benchmarked model's longest prompt plus its longest output.

Start-up cost: the checks across keys need the method registry, the model arithmetic and
the corpus sources, which import torch (seconds).  With ``stamp_dir`` (the Snakefile passes
``.snakemake/prunebench-validated``), a config that passed them is remembered by a hash of
the config and of this package's code, with the size and time of the local files they read
(corpus files, a local model's config.json): the next Snakemake run on the same config,
code and files checks only the schema (milliseconds) -- a no-op run imports neither torch
nor transformers.  The stamp also keeps what the rules read of each method's declarations
(:func:`method_needs`), so that the rules need not import the method registry either.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

# the schema machinery (re-exported: the methods check their settings with settings_problems)
from .schemacheck import NAME_RULE, _path, _problems, _validator, settings_problems  # noqa: F401

#: the config schema, shipped with the package (the Snakefile validates against this file too)
SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The config has values the pipeline refuses."""


def schema_problems(config: dict, schema_path: str | os.PathLike = SCHEMA) -> list[tuple[tuple, str]]:
    schema = yaml.safe_load(Path(schema_path).read_text())
    return _problems(_validator(schema), config)


def schema_errors(config: dict, schema_path: str | os.PathLike = SCHEMA) -> list[str]:
    return [f"config key {_path(p)}: {msg}" for p, msg in schema_problems(config, schema_path)]


class _Valid:
    """Which parts of the config passed the schema: the checks across keys run on those."""

    def __init__(self, bad):
        self.bad = [tuple(b) for b in bad]

    def __call__(self, *path) -> bool:
        """No schema problem at ``path``, above it or below it."""
        return not any(b[:len(path)] == path[:len(b)] for b in self.bad)


def _mapping(config: dict, key: str) -> dict:
    v = config.get(key)
    return v if isinstance(v, dict) else {}


def semantic_errors(config: dict, bad=(), seen: list | None = None) -> list[str]:
    """Checks across keys, on the parts of the config that passed the schema (``bad``: the
    paths of schema problems).  ``seen`` collects the local files the checks read."""
    ok = _Valid(bad)
    seen = [] if seen is None else seen
    errs: list[str] = []
    corpora = _mapping(config, "corpora")
    for key in ("calibration", "perplexity"):
        if ok(key, "corpus") and isinstance(config.get("corpora"), dict):
            names = config[key]["corpus"]
            for name in [names] if isinstance(names, str) else names:
                if name not in corpora:
                    errs.append(f"config key {key}.corpus: {name!r} is not an entry of corpora ({sorted(map(str, corpora))})")

    from .corpus import CorpusError, check_spec

    for name, spec in corpora.items():
        if ok("corpora", name):
            try:
                seen += [str(f) for f in check_spec(spec)]
            except CorpusError as exc:
                errs.append(f"config key corpora.{name}.{exc}")

    methods = _method_settings(config, ok, errs)
    for name, spec in _mapping(config, "models").items():
        if ok("models", name, "budget") and ok("models", name, "budgets"):
            errs += _budget_list_errors(name, spec)
        if ok("models", name, "weights"):
            errs += _model_errors(name, spec, ok, methods, seen)
            if ok("models", name, "architecture") and ok("models", name, "path"):
                errs += _context_errors(config, name, spec, ok)

    bench = _mapping(config, "benchmark")
    t = bench.get("timing") if ok("benchmark", "timing") else None
    if isinstance(t, dict):
        if t["min_runs"] > t["max_runs"]:
            errs.append(f"config key benchmark.timing.max_runs: {t['max_runs']} is below min_runs ({t['min_runs']})")
        if t["warmup_runs"] > t["max_warmup_runs"]:
            errs.append(f"config key benchmark.timing.max_warmup_runs: {t['max_warmup_runs']} is below "
                        f"warmup_runs ({t['warmup_runs']})")
    for key in ("methods", "models"):
        pool = config.get(key)
        if ok("benchmark", key) and isinstance(pool, dict):
            for item in bench.get(key) or []:
                if item not in pool:
                    errs.append(f"config key benchmark.{key}: {item!r} is not an entry of {key} ({sorted(map(str, pool))})")
    if ok("frontier") and ok("benchmark") and ok("methods") and isinstance(config.get("frontier"), dict):
        errs += _frontier_errors(config)
    return list(dict.fromkeys(errs))


def context_length(spec: dict) -> int | None:
    """``max_position_embeddings`` of a ``models.<name>`` entry's config, from ``architecture``
    (the family's default where not given) or a local folder's config.json; None where not
    known before the source stage runs (a hub model, GGUF, a config that does not build)."""
    from .architecture import build_config, local_config

    try:
        if spec.get("architecture"):
            cfg = build_config(spec["architecture"])
        elif spec.get("weights") in ("pretrained", "random") and local_config(spec.get("path")):
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(local_config(spec["path"]).parent)
        else:
            return None
    except Exception:  # noqa: BLE001 - the architecture checks report it
        return None
    n = getattr(cfg, "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _context_errors(config: dict, name: str, spec: dict, ok) -> list[str]:
    """Token lengths beyond ``models.<name>``'s context (:func:`context_length`): the
    calibration windows, the perplexity windows (not computed for random weights) and, for a
    benchmarked model, the longest prompt plus the longest output."""
    ctx = context_length(spec)
    if ctx is None:
        return []
    beyond = f"beyond models.{name}'s context (max_position_embeddings {ctx})"
    errs = []
    for key in ("calibration", "perplexity") if spec["weights"] != "random" else ("calibration",):
        n = _mapping(config, key).get("seq_len")
        if ok(key, "seq_len") and isinstance(n, int) and n > ctx:
            errs.append(f"config key {key}.seq_len: {n} tokens, {beyond}")
    b = _mapping(config, "benchmark")
    if (ok("benchmark", "models") and ok("benchmark", "input_lengths") and ok("benchmark", "output_lengths")
            and name in (b.get("models") or _mapping(config, "models"))):
        i, o = max(b["input_lengths"]), max(b["output_lengths"])
        if i + o > ctx:
            errs.append(f"config key benchmark.input_lengths: a {i}-token prompt and {o} generated tokens "
                        f"(benchmark.output_lengths) make {i + o} tokens, {beyond}")
    return errs


def _frontier_errors(config: dict) -> list[str]:
    """``frontier.*`` names a cell of the benchmark grid and existing methods."""
    f, b, errs = config["frontier"], config["benchmark"], []
    for key, pool in FRONTIER_CELL.items():
        if f.get(key) is not None and f[key] not in b[pool]:
            errs.append(f"config key frontier.{key}: {f[key]!r} is not one of benchmark.{pool} ({b[pool]})")
    for item in f.get("methods") or []:
        if item not in config["methods"]:
            errs.append(f"config key frontier.methods: {item!r} is not an entry of methods "
                        f"({sorted(map(str, config['methods']))})")
    return errs  # a method's setting refused for several models: once


def _method_settings(config: dict, ok, errs: list[str]) -> dict[str, tuple[str, dict]]:
    """Check every ``methods.<name>``; return ``{name: (algorithm, settings)}`` of the valid ones."""
    from .methods import REGISTRY, budget_problem

    valid = {}
    for name, spec in _mapping(config, "methods").items():
        if not ok("methods", name):
            continue
        algo = spec["method"]
        if algo not in REGISTRY:
            errs.append(f"config key methods.{name}.method: unknown method {algo!r}; registered: {sorted(REGISTRY)}")
            continue
        settings = {k: v for k, v in spec.items() if k != "method"}
        problems = _problems(_validator(REGISTRY[algo].settings_schema), settings, ("methods", name))
        errs += [f"config key {_path(p)}: {msg}" for p, msg in problems]
        if problems:
            continue
        try:  # what the settings alone rule out (e.g. an empty layer range)
            budget_problem(algo, None, settings, None)
        except ValueError as exc:
            errs.append(f"config key methods.{name}.{exc}")
            continue
        valid[name] = (algo, settings)
    return valid


def _model_errors(name: str, spec: dict, ok, methods: dict, seen: list) -> list[str]:
    from .architecture import ArchitectureError, dense_info, local_config, path_problem, tokenizer_problem
    from .pkgdata import resolve_path

    k, w, errs = f"models.{name}", spec["weights"], []
    if ok("models", name, "path"):
        path = spec.get("path")
        if w in ("pretrained", "gguf") and not path:
            errs.append(f"config key {k}.path: required for weights {w!r} (hub id or local directory)")
        elif path and w in ("pretrained", "gguf") and path_problem(path):
            errs.append(f"config key {k}.path: {path_problem(path)}")
        elif w == "gguf" and ok("models", name, "gguf_file"):
            if not spec.get("gguf_file"):
                errs.append(f"config key {k}.gguf_file: required for weights 'gguf'")
            else:
                folder = Path(resolve_path(path))
                if not (folder / spec["gguf_file"]).is_file():
                    errs.append(f"config key {k}.gguf_file: {spec['gguf_file']!r} not found in {folder}")
    tok = spec.get("tokenizer") if ok("models", name, "tokenizer") else None
    if tok and path_problem(tok, what="tokenizer"):
        errs.append(f"config key {k}.tokenizer: {path_problem(tok, what='tokenizer')}")
    if not ok("models", name, "architecture") or not ok("models", name, "path"):
        return errs
    if w == "random" and not spec.get("architecture") and local_config(spec.get("path")) is None:
        errs.append(f"config key {k}.architecture: weights 'random' needs the architecture "
                    "(or path to a local folder with config.json)")
        return errs
    try:
        info = dense_info(spec)
    except ArchitectureError as exc:
        return errs + [f"config key {k}.{key}: {msg}" for key, msg in exc.problems]
    if not spec.get("architecture") and local_config(spec.get("path")):
        seen.append(str(local_config(spec["path"])))
    if tok and info is not None and not path_problem(tok, what="tokenizer"):
        errs += [f"config key {k}.tokenizer: {why}" for why in [tokenizer_problem(tok, info.vocab)] if why]
    if ok("models", name, "budget") and ok("models", name, "budgets"):
        for key, budget in _budget_keys(name, spec):
            errs += _budget_errors(key, budget, info, methods)
    return errs


def _budget_keys(name: str, spec: dict) -> list[tuple[str, dict]]:
    """``(config key, budget)`` of every budget of ``models.<name>``."""
    out = [(f"models.{name}.budget", spec["budget"])] if spec.get("budget") else []
    return out + [(f"models.{name}.budgets[{i}]", b) for i, b in enumerate(spec.get("budgets") or [])]


def _budget_list_errors(name: str, spec: dict) -> list[str]:
    """A model has at least one budget, and no budget twice."""
    keys = _budget_keys(name, spec)
    if not keys:
        return [f"config key models.{name}.budget: required, missing (or a list of budgets under budgets)"]
    errs, seen = [], {}
    for key, b in keys:
        tag = budget_tag(b)
        if tag in seen:
            errs.append(f"config key {key}: the same budget ({tag}) as {seen[tag]}")
        seen.setdefault(tag, key)
    return errs


def _budget_errors(k: str, budget: dict, info, methods: dict) -> list[str]:
    """The budget at config key ``k`` against the dense model (where known) and every
    method's reachable range."""
    import math

    from .methods import Budget, budget_problem

    p = budget.get("params")
    model = k.rsplit(".", 1)[0]
    if p is not None and not math.isfinite(p):
        return [f"config key {k}.params: must be a finite number, got {p!r}"]
    if p is not None and int(p) < 1:
        return [f"config key {k}.params: {p!r} rounds to {int(p)} parameters"]
    if info is None:
        return []
    if p is not None and p >= info.total:
        return [f"config key {k}.params: {p:,.0f} is not smaller than the dense model ({info.total:,} parameters)"]
    try:
        target = Budget.from_config(budget, info.total, key=k).target_params
    except ValueError as exc:
        return [str(exc)]
    errs = []
    for meth, (algo, settings) in methods.items():
        try:
            why = budget_problem(algo, info, settings, target)
        except ValueError as exc:
            errs.append(f"config key methods.{meth}.{exc} ({model} has {info.n_layers} layers)")
            continue
        if why:
            errs.append(f"config key {k}: methods.{meth}: {why}")
    return errs


def cuda_errors(config: dict) -> list[str]:
    wants = [k for k in ("benchmark", "pruning", "perplexity") if _mapping(config, k).get("device") == "cuda"]
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


def _stat(path: str) -> list:
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


def _read_stamp(stamp: Path) -> dict | None:
    """The stamp's record where it exists and the local files the checks read (listed in it)
    are unchanged; else None."""
    import json

    try:
        rec = json.loads(stamp.read_text())
        if all(_stat(f[0]) == f for f in rec["files"]) and isinstance(rec["methods"], dict):
            return rec
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        pass
    return None


def method_needs(config: dict) -> dict[str, dict[str, bool]]:
    """``{methods entry: what its method declares that the rules read}``
    (:meth:`prunebench.methods.Method.needs`: needs_calibration, copies_weights, wants_gpu)."""
    from .methods import get_method

    return {name: get_method(spec["method"]).needs() for name, spec in config["methods"].items()}


def validate(config: dict, *, check_cuda: bool = True, schema_path=SCHEMA,
             stamp_dir: str | os.PathLike | None = None, needs: dict | None = None) -> dict:
    """Fill defaults into ``config`` (in place) and raise ConfigError listing every problem:
    the schema's and those of the checks across keys, run on the parts the schema passed.

    ``stamp_dir``: remember a config that passed the cross-key checks (module docstring).
    ``needs``: a dict to fill with :func:`method_needs` -- what the rules read of each
    method -- from the method registry, or from the stamp of a config that passed before
    (the registry imports torch)."""
    import json

    problems = schema_problems(config, schema_path)
    errs = [f"config key {_path(p)}: {msg}" for p, msg in problems]
    stamp = Path(stamp_dir) / _fingerprint(config) if stamp_dir is not None and not errs else None
    rec = _read_stamp(stamp) if stamp is not None else None
    if rec is None:
        seen: list[str] = []
        errs += semantic_errors(config, [p for p, _ in problems], seen)
        if not errs and (stamp is not None or needs is not None):
            rec = {"files": [_stat(f) for f in dict.fromkeys(seen)], "methods": method_needs(config)}
            if stamp is not None:  # written whole or not at all: a torn stamp would be read as none
                stamp.parent.mkdir(parents=True, exist_ok=True)
                tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
                tmp.write_text(json.dumps(rec))
                os.replace(tmp, stamp)
    if check_cuda:
        errs += cuda_errors(config)
    if errs:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errs))
    for name, spec in config["models"].items():
        spec.setdefault("family", name)
    if needs is not None:
        needs.update(rec["methods"])
    return config


def merge(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` into ``base`` in place, recursively, as Snakemake merges config files."""
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


# budgets, variants, evaluation corpora, the frontier cell (re-exported: the rules read them here)
from .variants import (FRONTIER_CELL, VARIANT_PATTERN, VARIANT_SEP, budget_tag, eval_corpora,  # noqa: E402,F401
                       frontier_cell, split_variant, takes_budget, variant, variants)
# the grid a config describes (re-exported likewise)
from .grid import (CELL_FIELDS, bench_methods, bench_models, cell_expectations, cells, families,  # noqa: E402,F401
                   lookup)
