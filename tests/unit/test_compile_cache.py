"""Compile once per model: a later cell of the same width-pruned model (another batch size,
another output length, a fresh process) finds the compiled decoder-layer graphs in inductor's
on-disk cache instead of compiling them again, and still generates HF's greedy tokens."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

CELL = r"""
import json, sys
import torch
from torch._dynamo.utils import counters
import model_variants
from model_variants import prompt
from prunebench.backends import CompiledBackend
from prunebench.tools.selfcheck import check_equivalence

torch.set_num_threads(1)
batch, out_len, name, options = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
model = getattr(model_variants, name)()
ok, info = check_equivalence(model, prompt(batch=batch), out_len, CompiledBackend(compile=True, **options))
print(json.dumps({"ok": ok, "dynamic_widths": info.get("dynamic_widths"), "graphs": info.get("compiled_graphs"),
                  "precompiled": info.get("precompiled_graphs"), "before": info.get("precompiled_before", False),
                  "phases": [k for k in ("first_step_s", "warm_steps_s", "capture_s") if k in info],
                  "symbolic": info.get("symbolic_shapes"),
                  "hit": info.get("compile_cache_hits"), "miss": info.get("compile_cache_misses"),
                  "counted": [counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]]}))
"""


def _cell(tmp_path, batch: int, out_len: int, model: str = "flap_like", **options) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), TRITON_CACHE_DIR=str(tmp_path / "triton"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", CELL, str(batch), str(out_len), model, json.dumps(options)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"),
                    reason="torch.compile on CPU needs a C compiler")
def test_a_later_cell_of_another_batch_and_length_reuses_the_compiled_graphs(tmp_path):
    first = _cell(tmp_path, 2, 4)
    # the widths that differ are symbolic from the first trace: one graph for every layer
    assert first["ok"] and first["dynamic_widths"] and first["graphs"] == 1, first
    assert first["miss"] == 1 and first["hit"] == 0, first   # an empty cache: the graph compiled
    assert first["precompiled"] is None                       # automatic precompile: CUDA only
    later = _cell(tmp_path, 3, 9)                             # new process, batch 3, 9 new tokens
    assert later["ok"] and later["graphs"] == 1, later
    assert later["hit"] == 1 and later["miss"] == 0, later   # the graph from the cache
    assert later["counted"] == [1, 0] and first["counted"] == [0, 1]  # the record says what inductor counted


@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"),
                    reason="torch.compile on CPU needs a C compiler")
def test_symbolic_shapes_share_static_width_graphs_across_batch_sizes(tmp_path):
    """symbolic_shapes=True on a model of two layer shapes (widths static: one graph each): a
    later cell at another batch size and length finds both graphs; without it, it compiles
    them again."""
    first = _cell(tmp_path, 2, 4, "llm_pruner_like", symbolic_shapes=True)
    assert first["ok"] and not first["dynamic_widths"] and first["symbolic"], first
    assert first["graphs"] == 2 and first["miss"] == 2 and first["hit"] == 0, first
    later = _cell(tmp_path, 3, 9, "llm_pruner_like", symbolic_shapes=True)
    assert later["ok"] and later["graphs"] == 2 and later["hit"] == 2 and later["miss"] == 0, later
    static = _cell(tmp_path, 3, 9, "llm_pruner_like", symbolic_shapes=False)  # static widths, static batch
    assert static["ok"] and not static["symbolic"] and static["miss"] == 2 and static["hit"] == 0, static


@pytest.mark.skipif(not shutil.which("cc") and not shutil.which("gcc"),
                    reason="torch.compile on CPU needs a C compiler")
@pytest.mark.parametrize("model,first_batch,later_batch", [("llm_pruner_like", 2, 1), ("flap_like", 1, 3)])
def test_precompile_leaves_the_other_batch_class_in_the_cache(tmp_path, model, first_batch, later_batch):
    """precompile: a cell at batch 1 also compiles the symbolic-batch graphs, a cell above batch 1
    the batch-1 graphs, so that a later cell of the other class (another process, another
    length) compiles nothing: its own graphs are the ones the first precompiled, found in
    inductor's cache, and the first cell's record there says the other class is done, so it
    skips the precompile.  Without the record (a cache emptied), it precompiles again."""
    first = _cell(tmp_path, first_batch, 4, model, precompile=True)
    own, other = first["graphs"], first["precompiled"]
    assert first["ok"] and own >= 1 and other >= 1 and not first["before"], first
    assert first["miss"] == own + other and first["hit"] == 0, first
    assert first["phases"] == ["first_step_s"], first            # no CUDA graphs on CPU: one warm-up step
    later = _cell(tmp_path, later_batch, 9, model, precompile=True)
    assert later["ok"] and later["graphs"] == other and later["precompiled"] == 0 and later["before"], later
    assert later["hit"] == other and later["miss"] == 0, later
    shutil.rmtree(tmp_path / "inductor")
    again = _cell(tmp_path, later_batch, 9, model, precompile=True)  # graphs and record gone together
    assert again["ok"] and again["precompiled"] == own and not again["before"], again
    assert again["miss"] == own + other and again["hit"] == 0, again
