"""The method interface, the registry, the parameter budget and what a method can reach.

A method is one file of this package that calls :func:`register` with everything the
pipeline needs to know about it (the package discovers such files; ``base``, ``blocks``,
``width``, ``passes`` and ``saliency`` are helpers that register nothing):

``settings_schema``
    JSON schema of its settings (the config entry minus ``method``), with the ``default`` of
    every setting it does not require: :meth:`Method.settings` fills them in once, so the
    prune report records the settings actually used.
``reachable(info, settings) -> Reach``
    the parameter counts it can produce for an architecture (``info``: :class:`ArchInfo` of
    the dense model).  The config check (before any job, from the architecture built on the
    meta device) and the prune stage (on the loaded model) refuse a budget outside that
    range, and the prune stage refuses a result further from the budget than the method's
    tolerance.  Absent: the method takes no budget (``dense``).
``needs_calibration``
    whether the prune job reads the calibration windows (the rule asks for them).
``copies_weights``
    False: the method leaves the base model as it is; its model folder points at the base
    folder instead of holding a copy, and no model is loaded.
``wants_gpu``
    whether the prune job runs on ``pruning.device`` (and asks for a GPU there); False: on
    the CPU, with no GPU asked for.
``report_fields``
    columns the method adds to ``quality.csv``: ``{column: fn(report) -> value}`` read from
    its prune report (:meth:`Method.table_fields`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Budget:
    """How many parameters the pruned model should have.

    Built from a config entry ``budget: {params: N}`` (absolute) or
    ``budget: {ratio: r}`` (remove the fraction ``r`` of the dense parameters).
    """

    target_params: int
    dense_params: int

    @classmethod
    def from_config(cls, cfg: dict | None, dense_params: int, key: str = "budget") -> "Budget":
        cfg = cfg or {}
        if "params" in cfg and cfg["params"] is not None:
            target = int(float(cfg["params"]))
        elif "ratio" in cfg and cfg["ratio"] is not None:
            target = int(round(dense_params * (1.0 - float(cfg["ratio"]))))
        else:
            target = dense_params
        if not 0 < target <= dense_params:
            from ..config import ConfigError

            raise ConfigError(
                f"config key {key}: target of {target:,} parameters is not within (0, {dense_params:,}] "
                "(the dense model's size)"
            )
        return cls(target_params=target, dense_params=dense_params)

    @property
    def ratio(self) -> float:
        """Fraction of parameters to remove."""
        return 1.0 - self.target_params / self.dense_params


@dataclass
class PrunedModel:
    """What every method returns: the pruned model (in memory) and a JSON-able report."""

    model: "torch.nn.Module"
    report: dict = field(default_factory=dict)


class PruneFn(Protocol):
    """``prune(model, calibration, budget, settings)``: ``settings`` complete (defaults filled);
    ``calibration`` None for a method that declares ``needs_calibration=False``."""

    def __call__(
        self, model: "torch.nn.Module", calibration: "torch.Tensor | None", budget: Budget, settings: dict
    ) -> PrunedModel: ...


@dataclass(frozen=True)
class ArchInfo:
    """The parameter layout of a dense model, as the methods' ``reachable`` read it.

    Built by :func:`arch_info` from a model (one on the meta device costs nothing)."""

    total: int                    #: all parameters (tied embeddings once)
    block_params: tuple[int, ...]  #: parameters of each decoder block
    heads: int                    #: query heads per layer
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int             #: MLP channels per layer
    query_head_params: int        #: one query head (q rows + o_proj columns)
    kv_group_params: int          #: one KV group (its query heads, k/v head, o_proj columns)
    channel_params: int           #: one MLP channel (gate/up rows + down_proj column)
    o_bias: bool                  #: o_proj already has a bias
    down_bias: bool
    vocab: int = 0                #: rows of the input embedding (token ids must be below it)
    #: the first decoder block itself (on the meta device before any job): for solvers
    #: that plan on a layer's shapes
    layer: object = field(default=None, compare=False, repr=False)

    @property
    def n_layers(self) -> int:
        return len(self.block_params)


def arch_info(model) -> ArchInfo:
    from .width import attn_geometry, kv_group_params, mlp_channel_params, query_head_params

    layers = model.model.layers
    attn, mlp = layers[0].self_attn, layers[0].mlp
    g = attn_geometry(attn)
    return ArchInfo(
        total=sum(p.numel() for p in model.parameters()),
        block_params=tuple(sum(p.numel() for p in layer.parameters()) for layer in layers),
        heads=g.heads, kv_heads=g.kv_heads, head_dim=g.head_dim, hidden=g.hidden,
        intermediate=mlp.gate_proj.out_features, query_head_params=query_head_params(attn),
        kv_group_params=kv_group_params(attn), channel_params=mlp_channel_params(mlp),
        o_bias=attn.o_proj.bias is not None, down_bias=mlp.down_proj.bias is not None,
        vocab=model.model.embed_tokens.num_embeddings, layer=layers[0])


@dataclass(frozen=True)
class Reach:
    """Parameter counts a method can produce: ``low`` .. ``high``; a budget inside lands
    within ``tolerance`` (relative error of the result against the target).  ``check``
    (optional): for a target inside, raise ``ValueError`` where the method's steps still
    cannot land within the tolerance (coarse steps leave gaps)."""

    low: int
    high: int
    tolerance: float
    unit: str = ""  #: what the steps are, for messages ("whole blocks of 34,944")
    check: Callable[[int], object] | None = field(default=None, compare=False, repr=False)


#: ``reachable(info, settings) -> Reach | None``: ``info`` is None where the architecture is
#: not known before the jobs run (a hub checkpoint): then only the settings are checked.
#: ``settings`` are complete (defaults filled).  Invalid settings raise
#: ``ValueError("<settings key>: <what is wrong>")``.
Reachable = Callable[["ArchInfo | None", dict], "Reach | None"]

#: what the workflow's rules read of a method (:meth:`Method.needs`)
NEEDS = ("needs_calibration", "copies_weights", "wants_gpu")


@dataclass(frozen=True)
class Method:
    """A registered method: its prune function and its declarations (module docstring).

    Calling it prunes with the settings completed: ``method(model, calibration, budget, settings)``."""

    name: str
    prune: PruneFn
    settings_schema: dict
    reachable: Reachable | None = None
    needs_calibration: bool = True
    copies_weights: bool = True
    wants_gpu: bool = True
    report_fields: Mapping[str, Callable[[dict], object]] = field(default_factory=dict)
    module: str = ""  #: the file that registered it

    def settings(self, settings: dict) -> dict:
        """``settings`` checked against the schema, with every default filled in (a new dict).

        Raises ``ValueError("<settings key>: <what is wrong>")``."""
        from ..config import settings_problems

        out = dict(settings)
        problems = settings_problems(self.settings_schema, out)
        if problems:
            key, msg = problems[0]
            raise ValueError(f"{key}: {msg}")
        return out

    def reach(self, info: "ArchInfo | None", settings: dict) -> "Reach | None":
        """What the method reaches for ``info`` with ``settings`` (None: it takes no budget)."""
        return self.reachable(info, self.settings(settings)) if self.reachable else None

    def needs(self) -> dict[str, bool]:
        """The declarations the workflow's rules read (:data:`NEEDS`)."""
        return {k: getattr(self, k) for k in NEEDS}

    def table_fields(self, report: dict) -> dict:
        """The columns this method adds to ``quality.csv``, read from its prune report."""
        return {col: fn(report) for col, fn in self.report_fields.items()}

    def __call__(self, model, calibration, budget: Budget, settings: dict) -> PrunedModel:
        return self.prune(model, calibration, budget, self.settings(settings))


_METHODS: dict[str, Method] = {}
#: every registered method by name (read-only; filled by :func:`register`)
REGISTRY: Mapping[str, Method] = MappingProxyType(_METHODS)


def register(name: str, settings_schema: dict | None = None, reachable: Reachable | None = None, *,
             needs_calibration: bool = True, copies_weights: bool = True, wants_gpu: bool = True,
             report_fields: Mapping[str, Callable[[dict], object]] | None = None) -> Callable[[PruneFn], Method]:
    """Register the decorated ``prune`` function as method ``name`` with its declarations
    (module docstring).  The decorator returns the :class:`Method`."""
    if not copies_weights and (reachable is not None or needs_calibration):
        raise ValueError(f"method {name!r}: one that keeps the base weights takes no budget and no calibration")

    def deco(fn: PruneFn) -> Method:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        m = Method(name=name, prune=fn, settings_schema=settings_schema or {"type": "object"},
                   reachable=reachable, needs_calibration=needs_calibration, copies_weights=copies_weights,
                   wants_gpu=wants_gpu, report_fields=MappingProxyType(dict(report_fields or {})),
                   module=fn.__module__)
        _METHODS[name] = m
        return m

    return deco


def table_columns() -> list[str]:
    """Every column the registered methods add to ``quality.csv``, in registration order."""
    return list(dict.fromkeys(col for m in _METHODS.values() for col in m.report_fields))


def budget_problem(algo: str, info: ArchInfo | None, settings: dict, target: int | None) -> str | None:
    """Why ``algo`` with ``settings`` cannot prune to ``target`` parameters (None: it can).

    Raises ``ValueError("<settings key>: ...")`` for settings the architecture rules out."""
    reach = get_method(algo).reach(info, settings)
    if reach is None or target is None:
        return None
    if not reach.low <= target <= reach.high:
        return (f"{target:,} parameters is outside what {algo!r} can reach for this architecture "
                f"({reach.low:,} .. {reach.high:,} of {info.total:,}{'; ' + reach.unit if reach.unit else ''})")
    if reach.check is not None:
        try:
            reach.check(target)
        except ValueError as exc:
            return str(exc)
    return None


def result_problem(algo: str, info: ArchInfo, settings: dict, target: int, after: int) -> str | None:
    """Why a pruned model of ``after`` parameters misses ``target`` by more than the method's
    tolerance (None: within it)."""
    reach = get_method(algo).reach(info, settings)
    if reach is None:
        return None
    error = after / target - 1
    if abs(error) > reach.tolerance + 1e-12:
        return (f"{algo!r} produced {after:,} parameters, {error:+.2%} from the target {target:,}: "
                f"outside its tolerance of {reach.tolerance:.2%}")
    return None


def get_method(name: str) -> Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(_METHODS)}") from None
