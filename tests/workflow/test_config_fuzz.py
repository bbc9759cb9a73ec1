"""Config fuzzer: mutants of the tiny test config are refused naming a key, or they run.

Two properties, seeded (``PRUNEBENCH_FUZZ_SEED``, default 0), on the config of
``workflow_util.tiny_workdir`` (a local pretrained tiny model, files corpora):

* **validation** -- 1..3 mutations anywhere (values of other types and out of range, keys
  deleted, added, renamed to odd names, list items repeated, the model switched to a random
  architecture and that mutated): ``validate`` either passes or raises ``ConfigError`` whose
  every line is ``config key <path>: ...``; never another exception.  A key added to a mapping
  that is not a name map is refused naming that key.  A config that passes gives distinct cells.
* **runs** -- mutations of the knobs a tiny run can afford (grid, repetitions, budgets,
  method settings, architectures): a mutant that passes validation runs through Snakemake
  to the end, and its tables have exactly one row per cell of the config.

Defaults keep CI at about two minutes (``PRUNEBENCH_FUZZ_EXAMPLES`` validation examples,
default 300; ``PRUNEBENCH_FUZZ_RUNS`` pipeline runs, default 2); raise them for a long run.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time

import pandas as pd
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, event, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import tiny_arch  # noqa: E402
from prunebench import config as pbconfig  # noqa: E402
from workflow_util import snakemake, tiny_workdir  # noqa: E402

SEED = int(os.environ.get("PRUNEBENCH_FUZZ_SEED", "0"))
EXAMPLES = int(os.environ.get("PRUNEBENCH_FUZZ_EXAMPLES", "300"))
RUNS = int(os.environ.get("PRUNEBENCH_FUZZ_RUNS", "2"))

#: mappings whose keys are names the user chooses (anything else is closed)
NAME_MAPS = {("models",), ("methods",), ("corpora",)}
ODD_KEYS = ["extra", "keep_frist", "num_key_value_head", "base", "a b", "", "-x", "ÿ", "x" * 120, 1, "tiny", "dense"]
ODD_STRINGS = ["", " ", "a b", "base", "cache", "../up", "/abs/none", "x/y/z", "ÿ", "-lead", "tiny", "dense", "calib",
               "ev", "hf-eager", "float16", "cuda", "1e3", "null", "x" * 120]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("fuzz")
    cfg_path = tiny_workdir(wd)
    base = yaml.safe_load(cfg_path.read_text())
    with contextlib.chdir(wd):
        filled = pbconfig.validate(copy.deepcopy(base), check_cuda=False)
    return wd, base, filled


# --------------------------------------------------------------------------- mutations

def _paths(node, prefix=()):
    """Every path to a value (dict key or list index) in ``node``."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out.append(prefix + (k,))
        out += _paths(v, prefix + (k,))
    return out


def _containers(node, prefix=()):
    out = [(prefix, node)] if isinstance(node, (dict, list)) else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out += _containers(v, prefix + (k,))
    return out


def _get(node, path):
    for p in path:
        node = node[p]
    return node


scalars = st.one_of(
    st.integers(-3, 12), st.sampled_from([0, 1, 2 ** 31, 10 ** 12, -10 ** 12]),
    st.sampled_from([0.5, 2.0, -1.0, 1e-9, 1e300, float("inf"), float("nan")]),
    st.booleans(), st.none(), st.sampled_from(ODD_STRINGS), st.text(max_size=6),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.sampled_from(ODD_KEYS), scalars, max_size=2))


def _near(v):
    """Values close to ``v``: the same type, at and past its boundaries."""
    if isinstance(v, bool):
        return st.just(not v)
    if isinstance(v, int):
        return st.sampled_from([v - 1, v + 1, 0, -v, v * 1000, float(v)])
    if isinstance(v, float):
        return st.sampled_from([0.0, 1.0, -v, v * 1e6, 1 - 1e-12])
    if isinstance(v, list):
        return st.sampled_from([[], v + v[:1], v[::-1], [None], [str(x) for x in v]])
    if isinstance(v, str):
        return st.sampled_from(ODD_STRINGS)
    return values


@st.composite
def mutant(draw, base):
    cfg = copy.deepcopy(base)
    ops = []
    if draw(st.booleans()):  # the model becomes a random-weights architecture, which is mutated too
        cfg["models"]["tiny"].update(weights="random", architecture=tiny_arch(gqa=draw(st.booleans())))
        cfg["models"]["tiny"].pop("path")
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "near", "delete", "add", "rename", "repeat"]))
        if op in ("set", "near", "delete"):
            path = draw(st.sampled_from(_paths(cfg)))
            parent = _get(cfg, path[:-1])
            if op == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(values if op == "set" else _near(parent[path[-1]]))
        elif op in ("add", "rename"):
            dicts = [(p, d) for p, d in _containers(cfg) if isinstance(d, dict) and (op == "add" or d)]
            path, d = draw(st.sampled_from(dicts))
            key = draw(st.sampled_from(ODD_KEYS))
            if op == "rename":
                old = draw(st.sampled_from(sorted(d, key=str)))
                d[key] = d.pop(old)
            elif key not in d:
                d[key] = draw(values)
            else:
                op = "noop"
        else:
            lists = [(p, l) for p, l in _containers(cfg) if isinstance(l, list) and l]
            if not lists:
                continue
            path, lst = draw(st.sampled_from(lists))
            lst.append(copy.deepcopy(lst[0]))
        ops.append((op, path, key if op in ("add", "rename") else None))
    return cfg, ops


def check_refusal(msg: str, ops) -> None:
    lines = msg.splitlines()
    assert lines[0] == "invalid configuration:" and len(lines) > 1, msg
    assert all(line.startswith("  config key ") for line in lines[1:]), msg
    if len(ops) == 1 and ops[0][0] == "add" and ops[0][1] not in NAME_MAPS:
        _, path, key = ops[0]
        names = {pbconfig._path(path + (key,)), f"{pbconfig._path(path)}.{key}"}  # an int key: [1] or .1
        assert any(f"config key {n}" in msg for n in names), (ops, msg)


def check_valid(cfg: dict) -> list[tuple]:
    cells = [tuple(c.values()) for c in pbconfig.cells(cfg)]
    assert len(cells) == len(set(cells)) > 0, "validated config gives repeated cells"
    assert all(c[0] in cfg["models"] and c[1] in cfg["methods"] for c in cells)
    json.dumps(pbconfig.cell_expectations(cfg))
    return cells


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutants_are_refused_naming_a_key_or_valid(workdir, data):
    wd, _base, filled = workdir
    cfg, ops = data.draw(mutant(filled))
    with contextlib.chdir(wd):
        try:
            pbconfig.validate(cfg, check_cuda=False)
        except pbconfig.ConfigError as exc:
            event("refused")
            check_refusal(str(exc), ops)
            return
    event("valid")
    check_valid(cfg)


# --------------------------------------------------------------------------- runs

def _method():
    depth = st.fixed_dictionaries({"method": st.just("depth"), "criterion": st.sampled_from(["ppl", "taylor", "random"])},
                                  optional={"keep_first": st.integers(0, 9), "keep_last": st.integers(0, 9),
                                            "batch_size": st.integers(1, 3)})
    llm = st.fixed_dictionaries({"method": st.just("llm-pruner"), "importance": st.sampled_from(["l2", "taylor"])},
                                optional={"layer_start": st.integers(-9, 9), "layer_end": st.integers(-9, 9)})
    flap = st.fixed_dictionaries({"method": st.just("flap")},
                                 optional={"metric": st.sampled_from(["wifv", "ifv", "wifn"]),
                                           "bias_compensation": st.booleans(), "round_to": st.integers(1, 40)})
    blocks = st.fixed_dictionaries({"method": st.sampled_from(["shortgpt", "sleb", "angular"])},
                                   optional={"keep_first": st.integers(0, 9), "keep_last": st.integers(0, 9)})
    uniform = st.fixed_dictionaries({"method": st.sampled_from(["wanda-sp", "minitron"])},
                                    optional={"round_to": st.integers(1, 40)})
    return st.one_of(depth, llm, flap, blocks, uniform)


@st.composite
def _architecture(draw):
    heads = draw(st.sampled_from([2, 4, 8]))
    return {"model_type": "llama", "hidden_size": draw(st.sampled_from([32, 64])),
            "intermediate_size": draw(st.integers(4, 96)), "num_hidden_layers": draw(st.integers(1, 4)),
            "num_attention_heads": heads, "num_key_value_heads": draw(st.sampled_from([1, heads // 2, heads])),
            "vocab_size": draw(st.integers(50, 300)), "tie_word_embeddings": draw(st.booleans())}


KNOBS = {
    ("benchmark", "batch_sizes"): st.lists(st.integers(1, 3), min_size=1, max_size=2),
    ("benchmark", "input_lengths"): st.lists(st.integers(1, 8), min_size=1, max_size=2),
    ("benchmark", "output_lengths"): st.lists(st.integers(1, 6), min_size=1, max_size=1),
    ("benchmark", "backends"): st.sampled_from([["hf-eager"], ["compiled"], ["cuda-graph", "hf-eager"]]),
    ("benchmark", "attn_implementation"): st.sampled_from(["eager", "sdpa"]),
    ("benchmark", "dtype"): st.sampled_from(["float32", "bfloat16"]),
    ("benchmark", "models"): st.sampled_from([None, ["tiny"], ["tiny", "tiny"], []]),
    ("benchmark", "methods"): st.sampled_from([None, ["dense"], ["depth-ppl", "dense"], ["dense", "dense"]]),
    ("benchmark", "timing"): st.fixed_dictionaries({}, optional={
        "min_runs": st.integers(1, 3), "max_runs": st.integers(1, 3), "warmup_runs": st.integers(0, 2),
        "max_warmup_runs": st.integers(0, 2), "warmup_new_tokens": st.sampled_from([None, 1, 2])}),
    ("calibration", "n_samples"): st.integers(1, 4),
    ("calibration", "seq_len"): st.integers(2, 48),
    ("perplexity", "seq_len"): st.integers(2, 64),
    ("perplexity", "max_windows"): st.sampled_from([None, 1, 3]),
    ("perplexity", "batch_size"): st.integers(1, 8),
    ("models", "tiny", "budget"): st.one_of(
        st.fixed_dictionaries({"ratio": st.floats(0.01, 0.95)}),
        st.fixed_dictionaries({"params": st.integers(1, 400_000)})),
    ("methods", "depth-ppl"): _method(),
    ("methods", "extra"): _method(),
    ("models", "tiny"): st.fixed_dictionaries({"weights": st.just("random"), "architecture": _architecture(),
                                               "budget": st.fixed_dictionaries({"ratio": st.floats(0.05, 0.6)})},
                                              optional={"tokenizer": st.just("tiny")}),
}


@pytest.fixture(scope="module")
def baseline(workdir, tmp_path_factory):
    """The unmutated config run once: each mutant starts from a copy (only what it changes reruns)."""
    wd, base, _ = workdir
    snakemake(wd, "--cores", "2", config=wd / "cfg.yaml")
    return wd, base, {"runs": 0, "started": time.monotonic()}


@seed(SEED)
@settings(max_examples=RUNS * 4, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_valid_mutants_run_to_completion(baseline, tmp_path_factory, data):
    wd, base, state = baseline
    cfg = copy.deepcopy(base)
    for path in data.draw(st.lists(st.sampled_from(sorted(KNOBS, key=str)), min_size=1, max_size=3, unique=True)):
        _get(cfg, path[:-1])[path[-1]] = data.draw(KNOBS[path])
        event(f"knob {'.'.join(path)}")
    with contextlib.chdir(wd):
        try:
            filled = pbconfig.validate(copy.deepcopy(cfg), check_cuda=False)
        except pbconfig.ConfigError as exc:
            event("refused")
            check_refusal(str(exc), [])
            return
    event("valid")
    cells = check_valid(filled)
    if state["runs"] >= RUNS:
        return
    state["runs"] += 1
    run = tmp_path_factory.mktemp("mutant")
    shutil.rmtree(run)
    shutil.copytree(wd, run, symlinks=True)
    (run / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(run, "--cores", "2", config=run / "cfg.yaml", check=False)
    out = run / "results" / filled["experiment"]  # the experiment's folder (the name may be a mutant's)
    logs = "".join(p.read_text(errors="replace")[-1500:] for p in (out / "logs").rglob("*.log")
                   if p.stat().st_mtime > time.time() - 600 and "rror" in p.read_text(errors="replace"))
    assert proc.returncode == 0, f"{json.dumps(cfg)}\n{proc.stderr[-3000:]}\n{logs}"
    bench = pd.read_csv(out / "tables/benchmark.csv")
    rows = {tuple(r) for r in bench[["model", "method", "backend", "in_len", "out_len", "batch"]].itertuples(index=False)}
    assert len(bench) == len(cells) and rows == set(cells), (sorted(rows), sorted(cells))
    quality = pd.read_csv(out / "tables/quality.csv")
    assert len(quality) == len(filled["models"]) * len(filled["methods"])
    shutil.rmtree(run)
