"""The compiled backend's view of a model: decoder layers as plain tensors and numbers.

``Layer`` reads one decoder layer (its widths, norms, activation, projections; Q/K/V and
gate/up fused by :func:`fuse_linears`), ``rms_norm`` is the RMSNorm the supported families
use, ``attend_prefill``/``attend_decode`` the attention of a prompt and of one decode step
(eager math or SDPA), ``eos_ids`` the tokens ``generate(min_new_tokens=n)`` forbids,
``decode_weights`` the matrices a decode step multiplies by (the GEMV's shapes), ``pad_biases``
zero biases where some layers have one and others not (one structure, one compiled graph).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def eos_ids(model) -> list[int]:
    """Token ids that ``generate(min_new_tokens=n)`` forbids for all n new tokens."""
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None) if gc is not None else None
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return []
    ids = [eos] if isinstance(eos, int) else list(eos)
    return sorted({int(i) for i in ids if 0 <= int(i) < model.config.vocab_size})


#: RMSNorm classes whose forward is exactly :func:`rms_norm` (weight x normalised, fp32 inside)
RMS_NORMS = frozenset({"LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm"})
#: activation classes that are SiLU
SILU = frozenset({"SiLU", "SiLUActivation"})


def rms_norm(x, w, eps: float):
    """``LlamaRMSNorm.forward`` (and Qwen2's, Mistral's: the same code)."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


class Layer:
    """One decoder layer as plain tensors and numbers (widths differ per layer after width pruning).

    ``tensors`` and ``spec`` are what :meth:`prunebench.backends.compiled.CompiledBackend._layer` takes: layers of equal
    shapes and ``spec`` share one compiled graph (regional compilation)."""

    def __init__(self, layer, fuse: bool):
        attn, mlp = layer.self_attn, layer.mlp
        for name in ("q_norm", "k_norm", "sinks"):
            if getattr(attn, name, None) is not None:
                raise NotImplementedError(f"compiled backend: attention with {name} is not supported")
        ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
        for ln in (ln1, ln2):
            if type(ln).__name__ not in RMS_NORMS:
                raise NotImplementedError(f"compiled backend: norm {type(ln).__name__} is not supported "
                                          f"(supported: {sorted(RMS_NORMS)})")
        if type(mlp.act_fn).__name__ not in SILU:
            raise NotImplementedError(f"compiled backend: activation {type(mlp.act_fn).__name__} is not supported (SiLU)")
        self.attn, self.mlp = attn, mlp
        self.hd = attn.head_dim
        self.heads = attn.q_proj.out_features // self.hd
        self.kv_heads = attn.k_proj.out_features // self.hd
        if self.heads % self.kv_heads:
            raise ValueError(f"layer {attn.layer_idx}: {self.heads} heads not divisible by {self.kv_heads} KV heads")
        self.n_rep = self.heads // self.kv_heads
        self.scaling = attn.scaling
        self.qkv = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj]) if fuse else None
        self.gate_up = fuse_linears([mlp.gate_proj, mlp.up_proj]) if fuse else None

        def lins(fused, mods):
            if fused is not None:
                return ((fused[0], fused[1]),), tuple(fused[2])
            return tuple((m.weight, m.bias) for m in mods), None

        qkv, qkv_sizes = lins(self.qkv, (attn.q_proj, attn.k_proj, attn.v_proj))
        gu, gu_sizes = lins(self.gate_up, (mlp.gate_proj, mlp.up_proj))
        o, d = attn.o_proj, mlp.down_proj
        self.tensors = (ln1.weight, ln2.weight, qkv, (o.weight, o.bias), gu, (d.weight, d.bias))
        # the numbers a compiled graph is specialised on; the widths (heads, KV heads, MLP
        # channels) are read from the tensors' shapes, so layers of different widths can share
        # one graph compiled with dynamic shapes
        self.spec = (self.hd, float(self.scaling), float(ln1.variance_epsilon), float(ln2.variance_epsilon),
                     qkv_sizes is not None, gu_sizes is not None)

    def signature(self) -> tuple:
        """Equal for layers that can share one compiled graph."""
        def shapes(t):
            if isinstance(t, tuple):
                return tuple(shapes(x) for x in t)
            return None if t is None else tuple(t.shape)
        return shapes(self.tensors), self.spec


def pad_biases(layers: list[Layer]) -> int:
    """Give every layer a bias in each projection slot where some layer has one (zeros: ``y + 0``
    is ``y`` exactly), so that all layers share one structure and a compiled graph: a layer with a
    bias and one without differ in structure, not in shape, and no symbolic width merges them
    (FLAP compensates only the layers it pruned, so its layers have both).  Only ``tensors``
    change, the model's modules keep theirs.  Returns how many biases were added."""
    def slots(t):  # ((path to a (weight, bias) pair), ...) in a layer's tensors
        _, _, qkv, o, gu, d = t
        return [(2, i) for i in range(len(qkv))] + [(3,)] + [(4, i) for i in range(len(gu))] + [(5,)]

    def get(t, path):
        for i in path:
            t = t[i]
        return t

    def put(t, path, value):
        if not path:
            return value
        return tuple(put(x, path[1:], value) if i == path[0] else x for i, x in enumerate(t))

    paths = {tuple(slots(l.tensors)) for l in layers}
    if len(paths) != 1:  # fused in some layers, not in others: structures differ anyway
        return 0
    added = 0
    for path in paths.pop():
        if any(get(l.tensors, path)[1] is not None for l in layers):
            for l in layers:
                w, b = get(l.tensors, path)
                if b is None:
                    l.tensors = put(l.tensors, path, (w, torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)))
                    added += 1
    return added


def attend_prefill(eager: bool, neg_min: float, heads, hd, n_rep, scaling, q, k, v):
    """Causal attention over the prompt (as HF: eager math or SDPA with is_causal)."""
    B, _, T, _ = q.shape
    if eager:
        k = k.repeat_interleave(n_rep, dim=1) if n_rep > 1 else k
        v = v.repeat_interleave(n_rep, dim=1) if n_rep > 1 else v
        w = torch.matmul(q, k.transpose(2, 3)) * scaling
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        w = w + torch.zeros(T, T, dtype=w.dtype, device=q.device).masked_fill(~causal, neg_min)
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v)
    else:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=n_rep > 1)
    return o.transpose(1, 2).reshape(B, T, heads * hd)


def attend_decode(eager: bool, heads, kv_heads, hd, n_rep, scaling, q, kc, vc, mask, add_mask):
    """One query token against the whole static cache, later positions masked.

    GQA without copying the cache: the ``n_rep`` query heads of a KV head are laid out as
    ``n_rep`` query rows of that KV head (the same dot products as ``repeat_kv``).
    """
    B = q.shape[0]
    q = q.reshape(B, kv_heads, n_rep, hd)
    if eager:
        w = torch.matmul(q, kc.transpose(2, 3)) * scaling + add_mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, vc)
    else:
        o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, scale=scaling)
    return o.reshape(B, 1, heads * hd)


def fuse_linears(linears: list[torch.nn.Linear]):
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


def decode_weights(layers: list[Layer], lm_head) -> list[torch.Tensor]:
    """Every weight matrix a decode step multiplies by, as the compiled backend uses it."""
    ws = []
    for l in layers:
        a, m = l.attn, l.mlp
        ws += [l.qkv[0]] if l.qkv is not None else [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]
        ws.append(a.o_proj.weight)
        ws += [l.gate_up[0]] if l.gate_up is not None else [m.gate_proj.weight, m.up_proj.weight]
        ws.append(m.down_proj.weight)
    return ws + [lm_head.weight]
