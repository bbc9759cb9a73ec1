"""Generation backends: how one benchmark call turns a prompt into ``out_len`` new tokens.

Every backend does the same work: greedy decoding of exactly ``out_len`` new tokens
(the EOS token is never chosen, as with ``min_new_tokens = max_new_tokens``), one call =
prefill of the ``in_len`` prompt tokens + ``out_len - 1`` decode steps, same dtype.

``hf-eager``
    ``transformers``' ``model.generate`` (:func:`prunebench.benchmark.generate_once`):
    a Python loop that launches every kernel one by one; at batch 1 it mostly measures
    the framework.
``compiled``
    our own greedy loop around the model's modules with a static per-layer KV cache
    (each layer its own head count, so width-pruned and depth-pruned models work); the
    decode step is compiled with ``torch.compile`` (fuses the small element-wise ops) and,
    on CUDA, the prefill and the decode step are captured once into CUDA graphs
    (``torch.cuda.CUDAGraph``) and replayed: a call is one prefill replay +
    ``out_len - 1`` decode replays, no Python per layer.  Q/K/V and gate/up projections
    are fused into one matmul each (the model's own parameters become views of the fused
    weight: no extra memory, the model still works as before).  At batch 1 every
    matrix-vector product of a step runs on :mod:`prunebench.gemv`'s Triton kernel, in the
    configuration that was fastest for that weight shape when ``prepare`` timed them all
    against cuBLAS (option ``gemv``; cuBLAS where it wins or where triton is missing).  On CPU there are no graphs
    and, by default, no compilation (same code path, used by the tests).
``cuda-graph``
    ``compiled`` without ``torch.compile`` (CUDA graphs of the eager kernels): seconds to
    prepare instead of about a minute per cell.

API (the benchmark calls it)::

    be = BACKENDS[name]()                                # or make_backend(name, **options)
    info = be.prepare(model, batch, in_len, out_len)     # {"compile_s": ..., ...}; not timed
    ids = be.generate(prompt, n)                         # [batch, in_len + n], n <= out_len

``prepare`` does everything that is not generation (cache allocation, weight fusion,
compilation, graph capture, warm-up runs); its wall time is ``compile_s`` and is never part
of a latency.  ``generate`` never compiles: a prompt of another shape, or more tokens than
prepared, is an error.

Roofline (``scripts/roofline.py``): a decode step has to read every weight once, so
``roofline_s = weight_bytes x out_len / bandwidth`` is the least time any implementation
can take (KV-cache reads ignored: small at batch 1).  ``bandwidth`` is measured with a
device-to-device copy of a large buffer and counts bytes read + bytes written per second
(:func:`measure_copy_bandwidth`), i.e. it assumes that streaming reads run at the rate of
copy traffic.  ``weight_bytes`` counts the bytes one decode step reads: every parameter,
except an untied input embedding table (only ``batch`` rows of it are read).

GPU self-check (fp16 + CUDA graphs + compiled kernels may round differently from eager:
a first difference where the two candidate tokens' logits are equal up to rounding is
reported as a ROUNDING TIE, exit 0; a real difference exits 1)::

    PYTHONPATH=src python -m prunebench.backends results/models/llama-7b/dense \
        --dtype float16 --in-len 12 --out-len 128 --batch 1 64 --time 3
    PYTHONPATH=src python -m prunebench.backends --config config.yaml --model llama-7b ...  # random weights

``--time N`` also times hf-eager and the backend (median of N) and prints latency,
throughput, roofline fraction, compile_s and the speed-up, one JSON line per batch size.

Limits: one ``prepare`` per process is the intended use with ``torch.compile`` (each prepare
recompiles; dynamo gives up compiling after 8).  Fusion makes q/k/v and gate/up parameters
views of one tensor: ``save_model`` of such a model would refuse shared tensors.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F

from . import gemv as gemv_mod
from .models import sync


class Backend(Protocol):
    name: str

    def prepare(self, model, batch: int, in_len: int, out_len: int) -> dict: ...

    def generate(self, prompt: torch.Tensor, out_len: int) -> torch.Tensor: ...


@contextlib.contextmanager
def _no_grad():
    """One grad mode for preparing and generating, whatever the caller's (the benchmark uses
    inference_mode): ordinary tensors, no autograd; torch.compile's guards always see the same."""
    with torch.inference_mode(False), torch.no_grad():
        yield


# --------------------------------------------------------------------------- hf-eager

class HFEagerBackend:
    """``model.generate`` as it is (the reference)."""

    name = "hf-eager"

    def __init__(self):
        self.model = None

    def prepare(self, model, batch: int, in_len: int, out_len: int) -> dict:
        self.model = model
        return {"compile_s": 0.0}

    def generate(self, prompt: torch.Tensor, out_len: int) -> torch.Tensor:
        from . import benchmark  # looked up at call time (tests monkeypatch generate_once)

        return benchmark.generate_once(self.model, prompt, out_len)


# --------------------------------------------------------------------------- compiled

def _eos_ids(model) -> list[int]:
    """Token ids that ``generate(min_new_tokens=n)`` forbids for all n new tokens."""
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None) if gc is not None else None
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return []
    ids = [eos] if isinstance(eos, int) else list(eos)
    return sorted({int(i) for i in ids if 0 <= int(i) < model.config.vocab_size})


class _Layer:
    """One decoder layer: its modules and widths (widths differ per layer after width pruning)."""

    def __init__(self, layer, fuse: bool):
        attn, mlp = layer.self_attn, layer.mlp
        for name in ("q_norm", "k_norm", "sinks"):
            if getattr(attn, name, None) is not None:
                raise NotImplementedError(f"compiled backend: attention with {name} is not supported")
        self.ln1, self.ln2, self.attn, self.mlp = layer.input_layernorm, layer.post_attention_layernorm, attn, mlp
        self.hd = attn.head_dim
        self.heads = attn.q_proj.out_features // self.hd
        self.kv_heads = attn.k_proj.out_features // self.hd
        if self.heads % self.kv_heads:
            raise ValueError(f"layer {attn.layer_idx}: {self.heads} heads not divisible by {self.kv_heads} KV heads")
        self.n_rep = self.heads // self.kv_heads
        self.scaling = attn.scaling
        self.act = mlp.act_fn
        self.qkv = _fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj]) if fuse else None
        self.gate_up = _fuse_linears([mlp.gate_proj, mlp.up_proj]) if fuse else None


def _fuse_linears(linears: list[torch.nn.Linear]):
    """One weight (and bias) for linears sharing an input; the linears' parameters become views of it.

    Returns ``(weight, bias, sizes)`` or ``None`` (mixed biases).  Memory: one extra copy of
    these linears at a time, freed as the old parameters are dropped.  Idempotent.
    """
    has_bias = [l.bias is not None for l in linears]
    if any(has_bias) and not all(has_bias):
        return None
    sizes = [l.out_features for l in linears]
    done = getattr(linears[0], "_prunebench_fused", None)
    if done is not None:  # fused by an earlier prepare; still valid if the parameters are untouched
        w, b, old_sizes = done
        ptrs, start = [], 0
        for n in old_sizes:
            ptrs.append(w[start:start + n].data_ptr())
            start += n
        if old_sizes == sizes and [l.weight.data_ptr() for l in linears] == ptrs:
            return done
    with torch.no_grad():
        w = torch.cat([l.weight.detach() for l in linears])
        b = torch.cat([l.bias.detach() for l in linears]) if all(has_bias) else None
        start = 0
        for l, n in zip(linears, sizes):
            l.weight = torch.nn.Parameter(w[start:start + n], requires_grad=False)
            if b is not None:
                l.bias = torch.nn.Parameter(b[start:start + n], requires_grad=False)
            start += n
    linears[0]._prunebench_fused = (w, b, sizes)
    return w, b, sizes


class CompiledBackend:
    """Static KV cache + compiled decode step + CUDA graphs (see the module docstring).

    Options (``None`` = automatic: on for CUDA, off for CPU):
    ``compile``      torch.compile the decode step (``compile_mode``, default ``"default"``);
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
                     generated kernels, for about twice the compile time: LLaMA-7B batch 1 on
                     an H200 0.569 -> 0.527 s in one sequence of runs, but 0.557 s in a grid
                     cell on another machine; docs/reproduction.md), ``{}`` on CPU.
    """

    name = "compiled"
    default_compile: bool | None = None
    GEMV = ("cublas", "reduce", "triton")
    ATTENTION = ("model", "sdpa")
    DEFAULT_INDUCTOR: ClassVar[dict] = {"coordinate_descent_tuning": True}

    def __init__(self, compile: bool | None = None, cuda_graphs: bool | None = None, fuse: bool = True,
                 compile_mode: str = "default", gemv: str | None = None, inductor: dict | None = None,
                 attention: str = "model"):
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
            self.layers = [_Layer(layer, self.fuse) for layer in inner.layers]
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
            eos = _eos_ids(model)
            self.eos = torch.tensor(eos, dtype=torch.long, device=dev) if eos else None
            self.neg_min = torch.finfo(dtype).min
            self.gemv_plan, gemv_info = {}, {}
            if self.gemv == "triton" and batch == 1:
                self.gemv_plan, report = gemv_mod.plan(self._decode_weights(), dtype)
                gemv_info = {"gemv_shapes": len(self.gemv_plan),
                             "gemv_triton_shapes": sum(c is not None for c in self.gemv_plan.values()),
                             "gemv_select_s": round(report["select_s"], 3)}
                if report.get("timed"):
                    gemv_info.update(gemv_step_cublas_us=round(report["step_cublas_s"] * 1e6, 1),
                                     gemv_step_chosen_us=round(report["step_chosen_s"] * 1e6, 1))

            self._decode = self._decode_step
            if use_compile:
                self._decode = torch.compile(self._decode_step, mode=self.compile_mode, fullgraph=True, dynamic=False)
            self.graphs = None
            inductor = self.inductor
            if inductor is None:
                inductor = dict(self.DEFAULT_INDUCTOR) if on_cuda else {}
            with self._inductor_config(use_compile, inductor):
                if use_graphs:
                    self._capture()
                else:
                    self._prefill_step()       # warm-up (and, with compile, compilation)
                    self._decode()
        sync(dev)
        return {"compile_s": time.perf_counter() - t0, "compiled": bool(use_compile),
                "cuda_graphs": bool(use_graphs), "fused": self.fuse, "max_len": L, "gemv": self.gemv,
                "attention": "eager" if self.eager_attn else "sdpa",
                "inductor": inductor if use_compile else {}, **gemv_info}

    def _decode_weights(self) -> list[torch.Tensor]:
        """Every weight matrix a decode step multiplies by, as ``_layers`` uses it."""
        ws = []
        for l in self.layers:
            a, m = l.attn, l.mlp
            ws += [l.qkv[0]] if l.qkv is not None else [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]
            ws.append(a.o_proj.weight)
            ws += [l.gate_up[0]] if l.gate_up is not None else [m.gate_proj.weight, m.up_proj.weight]
            ws.append(m.down_proj.weight)
        return ws + [self.lm_head.weight]

    @staticmethod
    def _inductor_config(use_compile: bool, inductor: dict):
        if not (use_compile and inductor):
            return contextlib.nullcontext()
        import torch._inductor.config as inductor_config

        unknown = sorted(k for k in inductor if not hasattr(inductor_config, k))
        if unknown:
            raise ValueError(f"compiled backend: unknown torch._inductor.config option(s) {unknown}")
        return inductor_config.patch(inductor)

    def _capture(self) -> None:
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(3):  # compile, autotune, cuBLAS workspaces -- all before capture
                self._prefill_step()
                self._decode()
        torch.cuda.current_stream(self.device).wait_stream(s)
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # warm-up activations go back so the graph pool can use them
        g_pre, g_dec = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(g_pre):
            self._prefill_step()
        # intermediates only (results go to static buffers), replayed in order: share the pool
        with torch.cuda.graph(g_dec, pool=g_pre.pool()):
            self._decode()
        self.graphs = (g_pre, g_dec)

    def _release(self) -> None:
        self.graphs = None
        self.k = self.v = None

    # ----------------------------------------------------------------- the model
    def _attend_prefill(self, l: _Layer, q, k, v):
        """Causal attention over the prompt (as HF: eager math or SDPA with is_causal)."""
        B, _, T, _ = q.shape
        if self.eager_attn:
            k = k.repeat_interleave(l.n_rep, dim=1) if l.n_rep > 1 else k
            v = v.repeat_interleave(l.n_rep, dim=1) if l.n_rep > 1 else v
            w = torch.matmul(q, k.transpose(2, 3)) * l.scaling
            causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
            w = w + torch.zeros(T, T, dtype=w.dtype, device=q.device).masked_fill(~causal, self.neg_min)
            w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(w, v)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=l.scaling,
                                               enable_gqa=l.n_rep > 1)
        return o.transpose(1, 2).reshape(B, T, l.heads * l.hd)

    def _attend_decode(self, l: _Layer, q, kc, vc, mask, add_mask):
        """One query token against the whole static cache, later positions masked.

        GQA without copying the cache: the ``n_rep`` query heads of a KV head are laid out as
        ``n_rep`` query rows of that KV head (the same dot products as ``repeat_kv``).
        """
        B = q.shape[0]
        q = q.reshape(B, l.kv_heads, l.n_rep, l.hd)
        if self.eager_attn:
            w = torch.matmul(q, kc.transpose(2, 3)) * l.scaling + add_mask
            w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(w, vc)
        else:
            o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, scale=l.scaling)
        return o.reshape(B, 1, l.heads * l.hd)

    def _linear(self, h, w, b):
        """``F.linear``, or at one row (batch-1 decode) what ``gemv`` says."""
        if h.shape[0] * h.shape[1] == 1:
            if self.gemv == "reduce":
                y = (h.unsqueeze(-2).float() * w.float()).sum(-1).to(h.dtype)
                return y if b is None else y + b
            cfg = self.gemv_plan.get((w.shape[0], w.shape[1]))
            if cfg is not None:
                return gemv_mod.gemv(h, w, b, cfg)
        return F.linear(h, w, b)

    def _layers(self, x, positions, decode: bool):
        B, T, _ = x.shape
        cos, sin = self.rotary(x, positions)
        mask = add_mask = None
        if decode:
            mask = (self.arange_L <= self.pos).view(1, 1, 1, -1)
            if self.eager_attn:
                add_mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, self.neg_min)
        for l, kc, vc in zip(self.layers, self.k, self.v):
            h = l.ln1(x)
            if l.qkv is not None:
                w, b, sizes = l.qkv
                q, k, v = self._linear(h, w, b).split(sizes, dim=-1)
            else:
                a = l.attn
                q, k, v = (self._linear(h, m.weight, m.bias) for m in (a.q_proj, a.k_proj, a.v_proj))
            q = q.view(B, T, l.heads, l.hd).transpose(1, 2)
            k = k.view(B, T, l.kv_heads, l.hd).transpose(1, 2)
            v = v.view(B, T, l.kv_heads, l.hd).transpose(1, 2)
            q, k = self.rope(q, k, cos, sin)
            if decode:
                kc.index_copy_(2, self.pos, k)
                vc.index_copy_(2, self.pos, v)
                o = self._attend_decode(l, q, kc, vc, mask, add_mask)
            else:
                kc[:, :, :T].copy_(k)
                vc[:, :, :T].copy_(v)
                o = self._attend_prefill(l, q, k, v)
            x = x + self._linear(o, l.attn.o_proj.weight, l.attn.o_proj.bias)
            h = l.ln2(x)
            if l.gate_up is not None:
                w, b, sizes = l.gate_up
                g, u = self._linear(h, w, b).split(sizes, dim=-1)
            else:
                g, u = (self._linear(h, m.weight, m.bias) for m in (l.mlp.gate_proj, l.mlp.up_proj))
            d = l.mlp.down_proj
            x = x + self._linear(l.act(g) * u, d.weight, d.bias)
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
    def generate(self, prompt: torch.Tensor, out_len: int) -> torch.Tensor:
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
                for _ in range(out_len - 1):
                    g_dec.replay()
            else:
                self._prefill_step()
                for _ in range(out_len - 1):
                    self._decode()
            return torch.cat([prompt, self.gen[:, :out_len]], dim=1)


class CudaGraphBackend(CompiledBackend):
    """``compiled`` without ``torch.compile``: CUDA graphs of the eager kernels."""

    name = "cuda-graph"
    default_compile = False


BACKENDS: dict[str, type] = {b.name: b for b in (HFEagerBackend, CompiledBackend, CudaGraphBackend)}


def make_backend(name: str, **options) -> Backend:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"benchmark.backends: unknown backend {name!r}; expected one of {sorted(BACKENDS)}") from None
    return cls(**options)


# --------------------------------------------------------------------------- equivalence

def check_equivalence(model, prompt: torch.Tensor, n: int, backend: Backend | None = None) -> tuple[bool, dict]:
    """Greedy tokens of ``backend`` (default: a fresh ``compiled``) vs ``model.generate``.

    Returns ``(equal, info)``: ``equal`` is exact token equality; ``info`` holds the
    backend's ``prepare`` info, ``agree`` (fraction of equal new tokens) and
    ``first_mismatch``: ``None`` or ``{"row", "step", "eager", "backend", "margin",
    "logit_scale", "tie"}`` where ``margin`` = logit of the eager token minus logit of the
    backend's token at that step (a full forward of the eager sequence) and ``tie`` says
    ``|margin| <= 8 eps(dtype) x logit_scale``: the two tokens were equal up to rounding,
    so the divergence is a rounding tie (expected in fp16/bf16), not a bug.
    """
    from .benchmark import generate_once

    backend = backend or CompiledBackend()
    batch, in_len = prompt.shape
    info = dict(backend.prepare(model, batch, in_len, n))
    with torch.inference_mode():
        ref = generate_once(model, prompt, n)
        out = backend.generate(prompt, n)
        if out.shape != ref.shape:
            raise AssertionError(f"shapes differ: backend {tuple(out.shape)} vs eager {tuple(ref.shape)}")
        new_ref, new_out = ref[:, in_len:], out[:, in_len:]
        diff = (new_ref != new_out)
        info["agree"] = 1.0 - diff.float().mean().item()
        info["first_mismatch"] = None
        if diff.any():
            steps = torch.where(diff.any(0))[0]
            step = int(steps[0])
            row = int(torch.where(diff[:, step])[0][0])
            seq = ref[row: row + 1, : in_len + step]
            logits = model(input_ids=seq, use_cache=False).logits[0, -1].float()
            a, b = int(new_ref[row, step]), int(new_out[row, step])
            margin, scale = float(logits[a] - logits[b]), float(logits.abs().max())
            tol = 8 * torch.finfo(next(model.parameters()).dtype).eps * max(scale, 1.0)
            info["first_mismatch"] = {"row": row, "step": step, "eager": a, "backend": b, "margin": margin,
                                      "logit_scale": scale, "tie": abs(margin) <= tol}
    return not bool(diff.any()), info


# --------------------------------------------------------------------------- roofline

def weight_bytes(model, *, decode_read: bool = True) -> int:
    """Bytes of the model's parameters (tied weights once).

    ``decode_read`` (default): the bytes a decode step reads, i.e. without an input
    embedding table that is not tied to the output head (a step reads only ``batch`` rows of it).
    """
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if decode_read:
        emb = model.get_input_embeddings().weight
        out = model.get_output_embeddings()
        tied = out is not None and (out.weight is emb or (
            emb.device.type != "meta" and out.weight.data_ptr() == emb.data_ptr()))
        if not tied:
            total -= emb.numel() * emb.element_size()
    return total


def measure_copy_bandwidth(device, nbytes: int | None = None, iters: int | None = None, trials: int = 5) -> float:
    """Memory bandwidth in bytes/s: (bytes read + bytes written) / time of a large copy, best of ``trials``.

    Default: 10 copies of 1 GiB on CUDA (far larger than L2; ~0.1 s in all), 3 of 64 MiB on CPU.
    Needs 2 x ``nbytes`` free memory; measure before loading a model.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    nbytes = nbytes or (1 << 30 if dev.type == "cuda" else 1 << 26)
    iters = iters or (10 if dev.type == "cuda" else 3)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    best = 0.0
    for _ in range(trials + 1):  # the first trial is a warm-up
        sync(dev)
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                dst.copy_(src)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                dst.copy_(src)
            seconds = time.perf_counter() - t0
        best = max(best, 2 * nbytes * iters / seconds)
    del src, dst
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return best


def roofline_seconds(weight_bytes: float, out_len: int, bandwidth: float, kv_read_bytes: float = 0.0) -> float:
    """Least time for ``out_len`` forward passes that each read ``weight_bytes`` at ``bandwidth`` bytes/s.

    ``kv_read_bytes``: optional total KV-cache bytes read over the whole generation
    (:func:`kv_read_bytes`); 0 = weights only (the usual batch-1 roofline).
    """
    if bandwidth <= 0:
        raise ValueError("bandwidth must be > 0")
    return (weight_bytes * out_len + kv_read_bytes) / bandwidth


def kv_bytes_per_token(model) -> int:
    """KV-cache bytes one position of one sequence takes: K and V of every layer, at each
    layer's own width (width-pruned layers keep fewer heads; depth-pruned models have fewer
    layers), in the projections' dtype."""
    total = 0
    for layer in model.model.layers:
        attn = layer.self_attn
        for proj in (attn.k_proj, attn.v_proj):
            total += proj.out_features * proj.weight.element_size()
    return total


def kv_read_bytes(model, batch: int, in_len: int, out_len: int) -> int:
    """KV-cache bytes the decode steps read (step t attends to in_len + t positions)."""
    positions = sum(in_len + t for t in range(1, out_len))
    return batch * kv_bytes_per_token(model) * positions


def kv_cache_bytes(model, batch: int, in_len: int, out_len: int) -> int:
    """Bytes of the KV cache when ``generate`` ends: ``in_len + out_len - 1`` positions (the
    last token is never fed back) of ``batch`` sequences -- a lower bound on the memory a
    generation needs beyond the weights."""
    return batch * kv_bytes_per_token(model) * (in_len + out_len - 1)


def free_device_memory(device) -> int | None:
    """Free bytes on a CUDA device (this process's cached, unused blocks returned first);
    ``None`` for the CPU, which has no such bound."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info(dev)[0]


# --------------------------------------------------------------------------- CLI: GPU self-check

def time_backend(backend: Backend, prompt: torch.Tensor, out_len: int, runs: int = 3) -> list[float]:
    """Latencies (s) of ``runs`` calls after one untimed full-length call (backend prepared)."""
    dev = prompt.device
    backend.generate(prompt, out_len)
    lat = []
    for _ in range(runs):
        sync(dev)
        t0 = time.perf_counter()
        out = backend.generate(prompt, out_len)
        sync(dev)
        lat.append(time.perf_counter() - t0)
        assert out.shape == (prompt.shape[0], prompt.shape[1] + out_len)
    return lat


def profile_generate(backend: Backend, prompt: torch.Tensor, out_len: int, top: int = 12) -> dict:
    """One ``generate`` call under ``torch.profiler``: wall time, summed GPU kernel time, kernel
    count and the ``top`` kernels by time (CUDA only).  ``kernel_s / wall_s`` near 1 means the
    GPU never waits for the host; the rest is launch gaps and idle time."""
    from torch.profiler import ProfilerActivity, profile

    dev = prompt.device
    backend.generate(prompt, out_len)
    sync(dev)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        backend.generate(prompt, out_len)
        sync(dev)
        wall = time.perf_counter() - t0
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0)
        if us and getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type):
            rows.append((us / 1e6, e.count, e.key))
    rows.sort(reverse=True)
    return {"wall_s": wall, "kernel_s": sum(r[0] for r in rows), "kernels": sum(r[1] for r in rows),
            "top": [{"s": round(t, 5), "count": c, "name": k[:90]} for t, c, k in rows[:top]]}


def _parse_option(text: str) -> tuple[str, object]:
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _cli_model(a, dev):
    from .models import _llama_config, build_random, load_model

    if a.model_dir:
        return load_model(a.model_dir, dtype=a.dtype, device=dev, attn_implementation=a.attn)
    import yaml

    from .models import resolve_dtype

    spec = yaml.safe_load(open(a.config))["models"][a.model]
    config = _llama_config(spec["architecture"])
    config._attn_implementation = a.attn
    return build_random(config, resolve_dtype(a.dtype), dev, seed=0)


def main(argv: list[str] | None = None) -> int:
    import json
    import statistics

    from .benchmark import make_prompt
    from .models import resolve_device

    ap = argparse.ArgumentParser(
        prog="python -m prunebench.backends",
        description="Check that a backend's greedy tokens equal model.generate's, optionally time both "
                    "against the weight-streaming roofline.")
    ap.add_argument("model_dir", nargs="?", help="a model folder written by the pipeline")
    ap.add_argument("--config", help="or: config YAML ...")
    ap.add_argument("--model", help="... and a model name in it: random weights of models.<name>.architecture")
    ap.add_argument("--backend", default="compiled")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--attn", default="eager", help="attn_implementation: eager | sdpa")
    ap.add_argument("--in-len", type=int, default=12)
    ap.add_argument("--out-len", type=int, default=128)
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time", type=int, default=0, metavar="RUNS",
                    help="also time hf-eager and the backend (RUNS timed calls each, median)")
    ap.add_argument("--no-check", action="store_true", help="skip the token check")
    ap.add_argument("--skip-eager", action="store_true", help="with --time: time only the backend")
    ap.add_argument("--option", type=_parse_option, action="append", default=[], metavar="KEY=VALUE",
                    help="backend option (VALUE is JSON if it parses), e.g. gemv=reduce "
                         "inductor='{\"coordinate_descent_tuning\": true}'; repeatable")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one call of the backend (CUDA): kernel time vs wall time, top kernels")
    a = ap.parse_args(argv)
    if bool(a.model_dir) == bool(a.config and a.model):
        ap.error("give a model folder, or --config and --model")
    dev = resolve_device(a.device)
    bw = measure_copy_bandwidth(dev) if a.time else None
    model = _cli_model(a, dev)
    name = a.model_dir or a.model
    failed = False
    for batch in a.batch:
        prompt = make_prompt(model.config.vocab_size, a.in_len, batch, a.seed, dev)
        tag = f"{name} {a.dtype} attn={a.attn} bs={batch} {a.in_len}+{a.out_len} on {dev}"
        fast, fast_info = make_backend(a.backend, **dict(a.option)), None
        if not a.no_check:  # prepares ``fast``: the timing below reuses it (one compilation per batch)
            ok, info = check_equivalence(model, prompt, a.out_len, fast)
            fast_info = info
            mm = info["first_mismatch"]
            verdict = "EQUAL" if ok else f"ROUNDING TIE at step {mm['step']}" if mm["tie"] else "DIFFERENT"
            failed |= not (ok or mm["tie"])
            print(f"check  {a.backend} vs hf-eager, {tag}: {verdict}; {info}", flush=True)
        if a.time:
            row = {"model": name, "dtype": a.dtype, "batch": batch, "in_len": a.in_len, "out_len": a.out_len,
                   "hbm_bandwidth_gbs": bw / 1e9,
                   "roofline_s": roofline_seconds(weight_bytes(model), a.out_len, bw)}
            fast_info = fast_info or fast.prepare(model, batch, a.in_len, a.out_len)
            timed = [(fast, fast_info)]
            if not a.skip_eager:
                eager = make_backend("hf-eager")
                timed.insert(0, (eager, eager.prepare(model, batch, a.in_len, a.out_len)))
            for be, info in timed:
                lat = statistics.median(time_backend(be, prompt, a.out_len, a.time))
                row[be.name] = {"latency_s": lat, "throughput_tok_s": batch * a.out_len / lat,
                                "roofline_frac": row["roofline_s"] / lat, "compile_s": info["compile_s"]}
            if not a.skip_eager:
                row["speedup"] = row["hf-eager"]["latency_s"] / row[a.backend]["latency_s"]
            row["options"] = dict(a.option)
            row["backend_info"] = {k: v for k, v in fast_info.items() if k not in ("compile_s", "agree", "first_mismatch")}
            print(f"time   {tag}: " + json.dumps(row), flush=True)
        if a.profile and dev.type == "cuda":
            if fast_info is None:
                fast.prepare(model, batch, a.in_len, a.out_len)
            print(f"profile {a.backend} {tag}: " + json.dumps(profile_generate(fast, prompt, a.out_len)), flush=True)
        del fast
        torch._dynamo.reset()  # compiled code of this batch size (and the caches it refers to) go
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
