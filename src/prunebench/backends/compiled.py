"""The ``compiled`` and ``cuda-graph`` backends: a static-cache greedy loop of our own.

Our own greedy loop around the model's modules with a static per-layer KV cache (each layer
its own head count, so width-pruned and depth-pruned models work).  Q/K/V and gate/up
projections are fused into one matmul each (the model's own parameters become views of the
fused weight: no extra memory, the model still works as before).

Compilation (``compiled``): the decoder layer's decode step is compiled with
``torch.compile`` once per distinct layer shape (*regional* compilation): the layers of a
uniform model share one compiled graph, so compiling costs one layer's tracing, not the
whole model's, and inductor's kernels are cached on disk (``TORCHINDUCTOR_CACHE_DIR``; the
benchmark points it at ``results/cache/``), so a later cell of the same model finds them.
Where every layer has its own width (FLAP's per-layer widths) the layer is compiled with
dynamic shapes (option ``dynamic_widths``): the widths that differ between layers are symbolic
from the first trace (missing biases zeros, :func:`.layers.pad_biases`), so one graph serves the
whole model, not one per layer shape.  The batch
(above 1) and the cache length are symbolic too (option ``symbolic_shapes``), so a later cell of
the same model (another batch size or output length, another process) loads the graphs from
inductor's cache; the first cell of a model also compiles the other batch class's graphs
(option ``precompile``), so the later ones find every graph.
On CUDA the prefill and the whole decode step are then captured once into CUDA graphs
(``torch.cuda.CUDAGraph``) and replayed: a call is one prefill replay + ``out_len - 1``
decode replays, no Python per layer.

At batch 1 every matrix-vector product of a step runs on :mod:`prunebench.gemv`'s Triton
kernel, in the configuration that was fastest for that weight shape when ``prepare`` timed
them all against cuBLAS (option ``gemv``; cuBLAS where it wins or where triton is missing);
the choice is stored per (device, dtype, shape) in ``gemv_cache`` and reused.  Under dynamic
widths the kernel is looked up by the weight's shape when the op runs (one graph, every
width on its own kernel).  On CPU there are no graphs and, by default, no compilation (same
code path, used by the tests).

Limits: fusion makes q/k/v and gate/up parameters views of one tensor: ``save_model`` of
such a model would refuse shared tensors.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from .. import gemv as gemv_mod, gemv_plan as plan_mod
from ..devices import sync
from . import dynamo
from .layers import Layer, attend_decode, attend_prefill, decode_weights, eos_ids, pad_biases, rms_norm


@contextlib.contextmanager
def _no_grad():
    """One grad mode for preparing and generating, whatever the caller's (the benchmark uses
    inference_mode): ordinary tensors, no autograd; torch.compile's guards always see the same."""
    with torch.inference_mode(False), torch.no_grad():
        yield


class CompiledBackend:
    """Static KV cache + compiled decode step + CUDA graphs (see the module docstring).

    Options (``None`` = automatic: on for CUDA, off for CPU):
    ``compile``      torch.compile each decoder layer's decode step (``compile_mode``, default
                     ``"default"``), once per distinct layer shape;
    ``cuda_graphs``  capture prefill and decode step into CUDA graphs (CUDA only);
    ``fuse``         fuse Q/K/V and gate/up weights (default on);
    ``gemv``         (``None`` = ``"triton"`` on CUDA where triton is installed, else ``"cublas"``)
                     how a decode step multiplies one token's activations by a weight matrix
                     at batch 1: ``"cublas"`` (``F.linear``), ``"reduce"`` (an
                     elementwise product summed over the input dimension, fp32 accumulation,
                     which ``torch.compile`` turns into one generated reduction kernel per
                     matrix, fused with its neighbours) or ``"triton"`` (:mod:`prunebench.gemv`:
                     per weight shape the fastest of a Triton GEMV's configurations and
                     cuBLAS, timed during ``prepare``); batches > 1 always use ``F.linear``;
    ``attention``    ``"model"`` (the model's ``attn_implementation``: eager math or SDPA, as
                     HF runs it) or ``"sdpa"`` (``F.scaled_dot_product_attention`` whatever the
                     model says: one fused kernel per layer and step instead of two matrix
                     products and a softmax);
    ``inductor``     ``torch._inductor.config`` values set while compiling; ``None`` =
                     :data:`DEFAULT_INDUCTOR` on CUDA (coordinate-descent tuning of the
                     generated kernels: slower to compile, faster kernels), ``{}`` on CPU;
    ``dynamic_widths`` (``None`` = automatic: on where the layers have 3 or more shapes) compile
                     the decoder layer with dynamic shapes, so that layers of different widths
                     (width pruning with per-layer widths, e.g. FLAP) share one graph instead of
                     one graph each (at batch 1 the GEMV's kernel is then chosen per weight shape
                     when the op runs, :func:`prunebench.gemv.gemv_planned`, not while tracing);
                     off: one static graph per distinct layer shape;
    ``symbolic_shapes`` (``None`` = automatic: on wherever the layer is compiled) compile the
                     batch (above 1) and the cache length symbolic, so that one graph per layer
                     shape serves every batch size and output length, in this process and,
                     through inductor's on-disk cache, in later cells; the widths stay as
                     ``dynamic_widths`` says (on one H200, LLaMA-7B shapes, latency within
                     ±1.6 % of static graphs: docs/measurement.md);
    ``precompile``   (``None`` = automatic: on CUDA where ``symbolic_shapes`` is on) also compile
                     the decode graphs of the other batch class, batch 1 (with the GEMV plan)
                     when the cell's batch is above 1 and batch :attr:`PRECOMPILE_BATCH` (a
                     symbolic batch) when it is 1, so that they land in inductor's cache for the
                     model's later cells (counted apart: ``precompiled_graphs``); a record in
                     inductor's cache directory says it was done, and a later cell of the same
                     layer shapes skips it (``precompiled_before``);
    ``gemv_cache``   a JSON file of per-(device, dtype, shape) GEMV choices (:func:`prunebench.gemv_plan.plan`):
                     shapes found there are not timed again; ``None`` = time every shape.
    """

    name = "compiled"
    default_compile: bool | None = None
    GEMV = ("cublas", "reduce", "triton")
    ATTENTION = ("model", "sdpa")
    DEFAULT_INDUCTOR: ClassVar[dict] = {"coordinate_descent_tuning": True}
    #: the batch size the symbolic-batch graph is traced at when a batch-1 cell precompiles it
    #: (its kernels are tuned at this size; the same graph then serves every batch above 1)
    PRECOMPILE_BATCH = 16

    def __init__(self, compile: bool | None = None, cuda_graphs: bool | None = None, fuse: bool = True,
                 compile_mode: str = "default", gemv: str | None = None, inductor: dict | None = None,
                 attention: str = "model", gemv_cache: str | None = None, dynamic_widths: bool | None = None,
                 symbolic_shapes: bool | None = None, precompile: bool | None = None):
        if gemv is not None and gemv not in self.GEMV:
            raise ValueError(f"compiled backend: gemv must be one of {self.GEMV}, got {gemv!r}")
        if attention not in self.ATTENTION:
            raise ValueError(f"compiled backend: attention must be one of {self.ATTENTION}, got {attention!r}")
        self.attention = attention
        self.compile = self.default_compile if compile is None else compile
        self.cuda_graphs = cuda_graphs
        self.fuse = fuse
        self.compile_mode = compile_mode
        self.gemv_option = gemv
        self.inductor = None if inductor is None else dict(inductor)
        self.gemv_cache = gemv_cache
        self.dynamic_widths = dynamic_widths
        self.symbolic_shapes = symbolic_shapes
        self.precompile = precompile
        self.symbolic_cell = self.symbolic_batch = self.gemv_at_run_time = False
        self.shape = None

    # ----------------------------------------------------------------- preparation
    def prepare(self, model, batch: int, in_len: int, out_len: int) -> dict:
        if in_len < 1 or out_len < 1 or batch < 1:
            raise ValueError(f"batch, in_len and out_len must be >= 1 (got {batch}, {in_len}, {out_len})")
        t0 = time.perf_counter()
        self._release()
        self.model = model
        p = next(model.parameters())
        dev, dtype = p.device, p.dtype
        self.device, self.dtype = dev, dtype
        on_cuda = dev.type == "cuda"
        use_compile = on_cuda if self.compile is None else self.compile
        use_graphs = on_cuda if self.cuda_graphs is None else self.cuda_graphs
        if use_graphs and not on_cuda:
            raise ValueError("cuda_graphs=True needs a model on a CUDA device")
        if use_graphs and use_compile and "reduce-overhead" in self.compile_mode:
            raise ValueError("compile_mode reduce-overhead makes its own CUDA graphs: use cuda_graphs=False with it")
        self.shape = (batch, in_len, out_len)
        # static length: every position of prompt + generation, rounded up to 16 (aligned attention masks)
        L = -(-(in_len + out_len) // 16) * 16
        self.max_len = L
        window = getattr(model.config, "sliding_window", None)
        if window is not None and window < L:
            raise NotImplementedError(f"compiled backend: sliding_window {window} < {L} positions")
        self.eager_attn = (self.attention == "model"
                           and getattr(model.config, "_attn_implementation", "eager") == "eager")
        triton_ok, why = gemv_mod.available(dev)
        self.gemv = self.gemv_option
        if self.gemv is None:  # automatic: the Triton GEMV on CUDA where triton is installed
            self.gemv = "triton" if on_cuda and triton_ok else "cublas"
        if self.gemv == "triton" and not triton_ok:
            raise ValueError(f"compiled backend: gemv='triton': {why}")
        inner = model.model
        self.embed, self.norm, self.rotary, self.lm_head = inner.embed_tokens, inner.norm, inner.rotary_emb, model.lm_head
        rope_type = getattr(self.rotary, "rope_type", "default")
        if "dynamic" in str(rope_type) or "longrope" in str(rope_type):
            raise NotImplementedError(f"compiled backend: rope_type {rope_type!r} recomputes frequencies per call")
        self.rope = sys.modules[type(inner.layers[0].self_attn).__module__].apply_rotary_pos_emb
        with _no_grad():
            self.layers = [Layer(layer, self.fuse) for layer in inner.layers]
            padded = pad_biases(self.layers) if use_compile else 0
            kw = dict(device=dev, dtype=dtype)
            self.k = [torch.zeros(batch, l.kv_heads, L, l.hd, **kw) for l in self.layers]
            self.v = [torch.zeros(batch, l.kv_heads, L, l.hd, **kw) for l in self.layers]
            self.prompt = torch.zeros(batch, in_len, dtype=torch.long, device=dev)
            self.tok = torch.zeros(batch, 1, dtype=torch.long, device=dev)
            self.pos = torch.zeros(1, dtype=torch.long, device=dev)
            # one spare column: a warm-up decode step after prefill writes column 1 even when out_len == 1
            self.gen = torch.zeros(batch, out_len + 1, dtype=torch.long, device=dev)
            self.prefill_pos = torch.arange(in_len, device=dev).unsqueeze(0)
            self.arange_L = torch.arange(L, device=dev)
            eos = eos_ids(model)
            self.eos = torch.tensor(eos, dtype=torch.long, device=dev) if eos else None
            self.neg_min = torch.finfo(dtype).min
            regions = len({l.signature() for l in self.layers})
            dynamic = self.dynamic_widths
            if dynamic is None:
                # one graph instead of one per layer shape, but symbolic widths change the generated
                # kernels (aligned LLM-Pruner, 2 shapes: 6.4 % slower at batch 64): from 3 shapes on
                dynamic = regions > 2
            dynamic = bool(use_compile and dynamic)
            # batch (above 1) and cache length symbolic, so that the next cell of this model (another
            # batch or length) finds the graphs in inductor's on-disk cache; batch 1 stays static (a
            # size-1 dimension is specialised)
            symbolic = self.symbolic_shapes
            self.symbolic_cell = bool(use_compile and (True if symbolic is None else symbolic))
            self.symbolic_batch = self.symbolic_cell and batch > 1
            precompile = self.precompile
            precompile = bool(use_compile and (self.symbolic_cell and on_cuda if precompile is None else precompile))
            inductor = (dict(self.DEFAULT_INDUCTOR) if on_cuda else {}) if self.inductor is None else self.inductor
            # a batch class's graphs in this machine's cache: a record beside them (own class too)
            records = {cls: dynamo.precompile_record(self.layers, dev, dtype, cls, [
                dynamic, self.compile_mode, inductor, self.fuse, self.gemv, self.eager_attn])
                for cls in (1, self.PRECOMPILE_BATCH)} if precompile else {}
            own_class = 1 if batch == 1 else self.PRECOMPILE_BATCH if self.symbolic_batch else None
            pre_record = records.get(1 if batch > 1 else self.PRECOMPILE_BATCH)
            pre = {"precompiled_graphs": 0, "precompile_s": 0.0, "precompiled_before": True} \
                if pre_record is not None and os.path.exists(pre_record) else {}  # done before: skipped
            precompile = precompile and not pre
            self.gemv_plan, gemv_info = {}, {}
            if self.gemv == "triton" and (batch == 1 or precompile):
                self.gemv_plan, report = plan_mod.plan(decode_weights(self.layers, self.lm_head), dtype, cache_path=self.gemv_cache)
                gemv_mod.adopt(dev, dtype, self.gemv_plan)
                gemv_info = plan_mod.summary(self.gemv_plan, report)
            # symbolic widths: the batch-1 GEMV's kernel is looked up when the op runs, not traced
            self.gemv_at_run_time = dynamic and bool(self.gemv_plan)
            if gemv_info:
                gemv_info["gemv_chosen_at"] = "run" if self.gemv_at_run_time else "trace"
            self.cache_dims = ()
            if dynamic:  # the widths that differ between layers: symbolic from the first trace
                self.cache_dims = (1,) if dynamo.symbolic_widths(self.layers) else ()
            if self.symbolic_cell:
                self.cache_dims += (2,)
            for c in (*self.k, *self.v):  # [batch, kv_heads, cache length, head_dim], kept all along
                dynamo.mark(c, self.cache_dims + ((0,) if self.symbolic_batch else ()))

            self._decode = self._decode_step
            self._decode_layer = self._layer_decode
            graphs_before, cache_before = dynamo.graph_count(), dynamo.cache_counts()
            if use_compile:  # regional: one graph per distinct layer shape, shared by equal layers
                cfg = torch._dynamo.config
                limit = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
                setattr(cfg, limit, max(getattr(cfg, limit), 2 * regions + 8))
                self._decode_layer = torch.compile(self._layer_decode, mode=self.compile_mode, fullgraph=True,
                                                   dynamic=None if dynamic or self.symbolic_cell else False)
            self.graphs, self.phases = None, {}
            with dynamo.inductor_config(use_compile, inductor), dynamo.dynamo_config(dynamic, self.symbolic_cell):
                if use_graphs:
                    self._capture()
                else:
                    self._warm_up(1)           # with compile: compilation
                own_graphs = dynamo.graph_count() - graphs_before
                dynamo.note_precompiled(records.get(own_class))
                if precompile:
                    t1 = time.perf_counter()
                    pre = {"precompiled_graphs": self._precompile(batch),
                           "precompile_s": round(time.perf_counter() - t1, 3)}
                    dynamo.note_precompiled(pre_record)
        sync(dev)
        return {"compile_s": time.perf_counter() - t0, "compiled": bool(use_compile),
                "cuda_graphs": bool(use_graphs), "fused": self.fuse, "max_len": L, "gemv": self.gemv,
                "attention": "eager" if self.eager_attn else "sdpa",
                "inductor": inductor if use_compile else {}, "compiled_regions": regions if use_compile else 0,
                "dynamic_widths": dynamic, "symbolic_shapes": self.symbolic_cell, "padded_biases": padded,
                "compiled_graphs": own_graphs, **pre, **self.phases,
                **{k: v - cache_before[k] for k, v in dynamo.cache_counts().items()}, **gemv_info}

    def _precompile(self, batch: int) -> int:
        """Compile the decode graphs of the other batch class than ``batch``'s (batch 1, or
        :attr:`PRECOMPILE_BATCH` for every batch above 1): one decode step of each distinct layer
        on zero inputs shaped and marked as that class's cells shape and mark theirs, so that the
        graphs, and inductor's cache entries, are the ones those cells look up.  Returns how
        many graphs were compiled (0 where this process compiled them before)."""
        other = self.PRECOMPILE_BATCH if batch == 1 else 1
        before = dynamo.graph_count()
        kw = dict(device=self.device, dtype=self.dtype)
        x = torch.zeros(other, 1, self.embed.weight.shape[1], **kw)
        cos, sin = self.rotary(x, self.pos.view(1, 1))
        mask = (self.arange_L <= self.pos).view(1, 1, 1, -1)
        add_mask = None
        if self.eager_attn:
            add_mask = torch.zeros(mask.shape, **kw).masked_fill(~mask, self.neg_min)
        for t, d in ((x, 0), (mask, 3), (add_mask, 3)):
            if t is not None and (d or other > 1):
                torch._dynamo.maybe_mark_dynamic(t, d)
        seen = set()
        for l, k in zip(self.layers, self.k):
            sig = l.signature()
            if sig not in seen:
                seen.add(sig)
                kc, vc = (torch.zeros(other, *k.shape[1:], **kw) for _ in range(2))
                for c in (kc, vc):
                    dynamo.mark(c, self.cache_dims + ((0,) if other > 1 else ()))
                self._decode_layer(x, cos, sin, kc, vc, mask, add_mask, l.tensors, l.spec)
        sync(self.device)
        return dynamo.graph_count() - before

    def _capture(self) -> None:
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            self._warm_up(3)  # compile, autotune, cuBLAS workspaces -- all before capture
        torch.cuda.current_stream(self.device).wait_stream(s)
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # warm-up activations go back so the graph pool can use them
        t0 = time.perf_counter()
        g_pre, g_dec = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(g_pre):
            self._prefill_step()
        # intermediates only (results go to static buffers), replayed in order: share the pool
        with torch.cuda.graph(g_dec, pool=g_pre.pool()):
            self._decode()
        self.graphs = (g_pre, g_dec)
        self.phases["capture_s"] = round(time.perf_counter() - t0, 3)

    def _warm_up(self, steps: int) -> None:
        """``steps`` prefill + decode steps, timed into ``phases``: the first (compiling) and the rest."""
        for i in range(steps):
            t0 = time.perf_counter()
            self._prefill_step()
            self._decode()
            sync(self.device)
            key = "first_step_s" if i == 0 else "warm_steps_s"
            self.phases[key] = round(self.phases.get(key, 0.0) + time.perf_counter() - t0, 3)

    def _release(self) -> None:
        self.graphs = None
        self.k = self.v = None

    # ----------------------------------------------------------------- the model
    def _linear(self, h, w, b):
        """``F.linear``, or at one row (batch-1 decode) what ``gemv`` says."""
        if h.shape[0] * h.shape[1] == 1:
            if self.gemv == "reduce":
                y = (h.unsqueeze(-2).float() * w.float()).sum(-1).to(h.dtype)
                return y if b is None else y + b
            if self.gemv_at_run_time:  # symbolic widths: no shape to look up while tracing
                return gemv_mod.gemv_planned(h, w, b)
            # (a lookup by shape would make symbolic widths static: only where there is a plan)
            cfg = self.gemv_plan.get((w.shape[0], w.shape[1])) if self.gemv_plan else None
            if cfg is not None:
                return gemv_mod.gemv(h, w, b, cfg)
        return F.linear(h, w, b)

    def _layer(self, x, cos, sin, kc, vc, mask, add_mask, tensors, spec, decode: bool):
        """One decoder layer: prefill (``decode=False``, the whole prompt) or one decode step.

        The layer's widths come from its tensors (KV heads from the cache, heads from
        ``o_proj``, MLP channels from ``down_proj``), not from ``spec``: under dynamic shapes
        one graph serves layers of every width."""
        hd, scaling, eps1, eps2, qkv_fused, gu_fused = spec
        ln1_w, ln2_w, qkv, (o_w, o_b), gu, (d_w, d_b) = tensors
        B, T, _ = x.shape
        kv_heads, heads, inter = kc.shape[1], o_w.shape[1] // hd, d_w.shape[1]
        n_rep = heads // kv_heads
        h = rms_norm(x, ln1_w, eps1)
        if qkv_fused:
            q, k, v = self._linear(h, *qkv[0]).split([heads * hd, kv_heads * hd, kv_heads * hd], dim=-1)
        else:
            q, k, v = (self._linear(h, w, b) for w, b in qkv)
        q = q.view(B, T, heads, hd).transpose(1, 2)
        k = k.view(B, T, kv_heads, hd).transpose(1, 2)
        v = v.view(B, T, kv_heads, hd).transpose(1, 2)
        q, k = self.rope(q, k, cos, sin)
        if decode:
            kc.index_copy_(2, self.pos, k)
            vc.index_copy_(2, self.pos, v)
            o = attend_decode(self.eager_attn, heads, kv_heads, hd, n_rep, scaling, q, kc, vc, mask, add_mask)
        else:
            kc[:, :, :T].copy_(k)
            vc[:, :, :T].copy_(v)
            o = attend_prefill(self.eager_attn, self.neg_min, heads, hd, n_rep, scaling, q, k, v)
        x = x + self._linear(o, o_w, o_b)
        h = rms_norm(x, ln2_w, eps2)
        if gu_fused:
            g, u = self._linear(h, *gu[0]).split([inter, inter], dim=-1)
        else:
            g, u = (self._linear(h, w, b) for w, b in gu)
        return x + self._linear(F.silu(g) * u, d_w, d_b)

    def _layer_decode(self, x, cos, sin, kc, vc, mask, add_mask, tensors, spec):
        return self._layer(x, cos, sin, kc, vc, mask, add_mask, tensors, spec, decode=True)

    def _layers(self, x, positions, decode: bool):
        cos, sin = self.rotary(x, positions)
        mask = add_mask = None
        if decode:
            mask = (self.arange_L <= self.pos).view(1, 1, 1, -1)
            if self.eager_attn:
                add_mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, self.neg_min)
        for l, kc, vc in zip(self.layers, self.k, self.v):
            if decode:
                if self.symbolic_cell:  # batch and cache length symbolic (the caches: marked in prepare)
                    for t, d in ((x, 0), (mask, 3), (add_mask, 3)):
                        if t is not None and (d or self.symbolic_batch):
                            torch._dynamo.maybe_mark_dynamic(t, d)
                x = self._decode_layer(x, cos, sin, kc, vc, mask, add_mask, l.tensors, l.spec)
            else:
                x = self._layer(x, cos, sin, kc, vc, None, None, l.tensors, l.spec, decode=False)
        return x

    def _next_token(self, x):
        logits = self._linear(self.norm(x[:, -1:, :]), self.lm_head.weight, self.lm_head.bias)[:, -1, :].float()
        if self.eos is not None:
            logits = logits.index_fill(-1, self.eos, float("-inf"))
        return logits.argmax(dim=-1)

    def _prefill_step(self) -> None:
        x = self.embed(self.prompt)
        nxt = self._next_token(self._layers(x, self.prefill_pos, decode=False))
        self.gen[:, 0].copy_(nxt)
        self.tok.copy_(nxt.unsqueeze(1))
        self.pos.fill_(self.shape[1])

    def _decode_step(self) -> None:
        x = self.embed(self.tok)
        nxt = self._next_token(self._layers(x, self.pos.view(1, 1), decode=True))
        self.gen.index_copy_(1, self.pos - (self.shape[1] - 1), nxt.unsqueeze(1))
        self.tok.copy_(nxt.unsqueeze(1))
        self.pos.add_(1)

    # ----------------------------------------------------------------- generation
    def generate(self, prompt: torch.Tensor, out_len: int,
                 on_first_token: Callable[[], None] | None = None) -> torch.Tensor:
        if self.shape is None:
            raise RuntimeError("compiled backend: call prepare() first")
        batch, in_len, max_out = self.shape
        if tuple(prompt.shape) != (batch, in_len) or not 1 <= out_len <= max_out:
            raise ValueError(f"compiled backend prepared for prompt {(batch, in_len)} and at most {max_out} new "
                             f"tokens, got prompt {tuple(prompt.shape)} and {out_len}")
        with _no_grad():
            self.prompt.copy_(prompt)
            if self.graphs is not None:
                g_pre, g_dec = self.graphs
                g_pre.replay()
                if on_first_token is not None:
                    on_first_token()
                for _ in range(out_len - 1):
                    g_dec.replay()
            else:
                self._prefill_step()
                if on_first_token is not None:
                    on_first_token()
                for _ in range(out_len - 1):
                    self._decode()
            return torch.cat([prompt, self.gen[:, :out_len]], dim=1)


class CudaGraphBackend(CompiledBackend):
    """``compiled`` without ``torch.compile``: CUDA graphs of the eager kernels."""

    name = "cuda-graph"
    default_compile = False
