"""Helpers shared by the depth-pruning methods (``depth``, ``shortgpt``, ``sleb``, ``angular``).

* parameter count of each block and the number of blocks that meets the budget;
* removing blocks (layers renumbered, config updated: the checkpoint stays a stock
  model of its family) and running the model with blocks left out (no copy);
* the residual stream at every block boundary, from one forward pass over the
  calibration tokens, handed batch by batch to the scorers that need only hidden
  states (``shortgpt``, ``angular``);
* the report every depth method writes;
* the parameter counts removing whole blocks can reach (:func:`reach`), which every
  depth method declares, and the column they add to the tables (:data:`REPORT_FIELDS`).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Protocol

import torch

from ..likelihood import model_nll
from ..models import count_params, renumber_layers
from .base import ArchInfo, Budget, Reach


def block_params(model) -> list[int]:
    return [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]


def removable(n_layers: int, keep_first: int, keep_last: int) -> list[int]:
    """Blocks that may be removed: all but the first ``keep_first`` and last ``keep_last``."""
    return list(range(keep_first, max(keep_first, n_layers - keep_last)))


def keep_reach(info: ArchInfo | None, settings: dict) -> Reach | None:
    """The ``reachable`` declaration of a whole-block method whose settings have
    ``keep_first`` / ``keep_last``: :func:`reach` with the settings' values."""
    return reach(info, settings["keep_first"], settings["keep_last"])


#: the column every whole-block method adds to ``quality.csv`` (``register(report_fields=)``)
REPORT_FIELDS = {"removed_blocks": lambda report: " ".join(map(str, report.get("removed_blocks") or []))}


def reach(info: ArchInfo | None, keep_first: int, keep_last: int) -> Reach | None:
    """Whole blocks go: from one block removed down to one block left (never zero), among
    those ``keep_first``/``keep_last`` leave removable; the count closest to the budget is
    taken, so the result is within half a block of it."""
    if info is None:
        return None
    n = info.n_layers
    blocks = sorted(info.block_params[i] for i in removable(n, keep_first, keep_last))
    if not blocks:
        raise ValueError(f"keep_first: keep_first ({keep_first}) + keep_last ({keep_last}) protect all {n} "
                         "blocks of the model: no block can be removed")
    most = min(len(blocks), n - 1)
    if most == 0:
        raise ValueError(f"keep_first: the model has {n} block; removing it would leave none")
    low = info.total - sum(blocks[-most:])
    return Reach(low=low, high=info.total - blocks[0], tolerance=blocks[-1] / 2 / low,
                 unit=f"whole blocks of {blocks[-1]:,} parameters, at most {most} of {n}")


def solve_num_blocks(total: int, per_block: list[int], candidates: list[int], target: int) -> int:
    """How many of ``candidates`` (cheapest-to-lose first) to remove to land closest to ``target``."""
    best_n, best_err = 0, abs(total - target)
    removed = 0
    for n, idx in enumerate(candidates, start=1):
        removed += per_block[idx]
        err = abs(total - removed - target)
        if err < best_err:
            best_n, best_err = n, err
    return best_n


def remove_blocks(model, drop: list[int]) -> None:
    """Remove blocks ``drop`` in place; renumber layers and update the config."""
    keep = [i for i in range(len(model.model.layers)) if i not in set(drop)]
    model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in keep])
    renumber_layers(model, keep)


class Skip:
    """Context manager: run the model with block(s) ``drop`` left out (no copy of weights)."""

    def __init__(self, model, drop: int | Iterable[int]):
        self.model = model
        self.drop = {drop} if isinstance(drop, int) else set(drop)

    def __enter__(self):
        m = self.model
        self.layers, self.n = m.model.layers, m.config.num_hidden_layers
        m.model.layers = torch.nn.ModuleList([l for j, l in enumerate(self.layers) if j not in self.drop])
        m.config.num_hidden_layers = len(m.model.layers)

    def __exit__(self, *exc):
        self.model.model.layers = self.layers
        self.model.config.num_hidden_layers = self.n


class Feed:
    """Context manager: the first module that runs after the embedding -- the first block left
    in ``model.model.layers``, or the final norm where none is left -- gets ``hidden`` as its
    input, whatever the embedding gave.  Starting a pass from recorded block inputs this way,
    not as ``inputs_embeds``, holds for families whose forward rescales or otherwise changes
    ``inputs_embeds`` before the first block (Gemma's embedding scale)."""

    def __init__(self, model, hidden: torch.Tensor):
        self.model, self.hidden = model, hidden

    def __enter__(self):
        inner = self.model.model
        first = inner.layers[0] if len(inner.layers) else inner.norm

        def replace(_mod, args, kwargs):
            if args:
                return (self.hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": self.hidden}

        # first among the module's hooks: those registered before (recording inputs) see ``hidden``
        self.handle = first.register_forward_pre_hook(replace, with_kwargs=True, prepend=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def dummy_ids(hidden: torch.Tensor) -> torch.Tensor:
    """Token ids of ``hidden``'s batch and length for a pass whose block inputs :class:`Feed`
    replaces (their embedding is computed and dropped)."""
    return torch.zeros(hidden.shape[:2], dtype=torch.long, device=hidden.device)


# --------------------------------------------------------------------------- PPL without blocks

@torch.no_grad()
def nll_without(model, calibration: torch.Tensor, removed, candidates: list[int], batch_size: int,
                inputs: "BlockInputs | None" = None) -> dict[int, float]:
    """Mean next-token NLL of ``calibration`` under ``model`` without the blocks ``removed``
    and ``b``, for every ``b`` in ``candidates`` (the quantity of the PPL criterion and of
    SLEB's steps).

    Removing ``b`` leaves the blocks before it unchanged: one pass of the model without
    ``removed`` records the input of every block, and each candidate's pass starts there,
    running only the blocks after ``b`` (with the same positions and causal mask, its input
    given by :class:`Feed`).  That is half the blocks of a full pass on average, the same
    numbers as :class:`Skip` and a full pass each (a test checks it).  ``inputs``
    (:class:`BlockInputs`) keeps the recorded inputs between calls on the same model: a
    call without the same blocks reads them, one with one more block removed runs only the
    blocks after it.

    With ``PRUNEBENCH_SCORE_CACHE`` set (the prune rule sets it), values already computed
    for the same model, calibration tokens and batch size -- by another budget of the same
    method, or by another method -- are read from there, and new ones added
    (:func:`score_cache`)."""
    from .. import score_cache

    device = next(model.parameters()).device
    layers = model.model.layers
    kept = [j for j in range(len(layers)) if j not in set(removed)]
    store = score_cache.open_for(model, calibration, batch_size)
    done = {b: store.get(sorted(set(removed) | {b})) for b in candidates}
    todo = [b for b in candidates if done[b] is None]
    if todo:
        totals, count = {b: 0.0 for b in todo}, 0
        for start in range(0, calibration.shape[0], batch_size):
            x = calibration[start:start + batch_size].to(device)
            given = (inputs or BlockInputs()).get(model, x, start, kept)
            for b in todo:
                k = kept.index(b)
                with Skip(model, [j for j in range(len(layers)) if j not in kept[k + 1:]]), Feed(model, given[k]):
                    totals[b] += model_nll(model, x).sum().item()
            count += x[:, 1:].numel()
        for b in todo:
            done[b] = totals[b] / max(count, 1)
            store.put(sorted(set(removed) | {b}), done[b])
        store.save()
    return done


def stored_nll(model, calibration: torch.Tensor, removed, candidates: list[int],
               batch_size: int) -> dict[int, float] | None:
    """Every candidate's :func:`nll_without` value from the score cache, or None where one
    is not there."""
    from .. import score_cache

    store = score_cache.open_for(model, calibration, batch_size)
    got = {b: store.get(sorted(set(removed) | {b})) for b in candidates}
    return None if any(v is None for v in got.values()) else got


def _block_inputs(model, x: torch.Tensor, kept: list[int], first: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The input of each block of ``kept`` when the model without the other blocks runs on
    ``x``; ``first`` given: the input of ``kept[0]`` (the blocks before it are not run)."""
    seen: list[torch.Tensor] = []

    def record(_m, args, kwargs):
        seen.append(args[0] if args else kwargs["hidden_states"])

    hooks = [model.model.layers[j].register_forward_pre_hook(record, with_kwargs=True) for j in kept]
    try:
        with Skip(model, [j for j in range(len(model.model.layers)) if j not in kept]), \
                (Feed(model, first) if first is not None else contextlib.nullcontext()):
            model.model(input_ids=x, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return seen


class BlockInputs:
    """The input of every kept block on each calibration batch of one model, kept between
    :func:`nll_without` calls (SLEB's steps, the rescoring rounds of a screen).  The same
    kept blocks: the inputs are read back; one block fewer (the next step of SLEB): the
    inputs before it are the same, and the blocks after it run from its recorded input (the
    value the block after it now receives).  The same tensors as a full pass each time."""

    def __init__(self):
        self.kept: dict[int, tuple[list[int], list[torch.Tensor]]] = {}

    def get(self, model, x: torch.Tensor, start: int, kept: list[int]) -> list[torch.Tensor]:
        old = self.kept.get(start)
        if old is not None and old[0] == kept:
            return old[1]
        gone = set(old[0]) - set(kept) if old is not None else None
        if old is not None and len(gone) == 1 and len(old[0]) == len(kept) + 1:
            i = old[0].index(gone.pop())
            got = old[1][:i] + (_block_inputs(model, x, kept[i:], first=old[1][i]) if i < len(kept) else [])
        else:
            got = _block_inputs(model, x, kept)
        self.kept[start] = (list(kept), got)
        return got


# --------------------------------------------------------------------------- screening

def screen_copy(model, dtype: str | None):
    """A copy of ``model`` in ``dtype`` that scores candidates first (None: no screening)."""
    import copy

    return copy.deepcopy(model).to(getattr(torch, dtype)) if dtype else None


def rescore(model, calibration: torch.Tensor, removed, coarse: dict[int, float], margin: float, batch_size: int,
            pick, inputs: BlockInputs | None = None) -> tuple[dict[int, float], float]:
    """Score again, in ``model``'s precision, the candidates ``pick(coarse, margin)`` selects
    from their screened NLLs ``coarse``; while the screen's error on those rescored exceeds
    a quarter of the margin, the margin grows to four times that error and the newly
    selected are rescored too.  Returns ``({candidate: NLL}, the final margin)``.

    A decision that depends on how NLLs compare (the lowest, or the lowest ``n``) is the
    one the pruning precision makes wherever the screen errs by at most half the margin,
    and the margin ends at least four times the largest error seen."""
    fine: dict[int, float] = {}
    inputs = BlockInputs() if inputs is None else inputs  # every round without the same blocks
    while True:
        todo = [b for b in pick(coarse, margin) if b not in fine]
        if not todo:
            return fine, margin
        fine.update(nll_without(model, calibration, removed, todo, batch_size, inputs))
        margin = max(margin, 4 * max(abs(coarse[b] - fine[b]) for b in fine))


def near_lowest(coarse: dict[int, float], margin: float) -> list[int]:
    """The candidates within ``margin`` of the lowest screened NLL (SLEB's step)."""
    low = min(coarse.values())
    return [b for b in coarse if coarse[b] <= low + margin]


def lowest_screened(model, coarse_model, calibration: torch.Tensor, removed, candidates: list[int], n: int,
                    margin: float, batch_size: int) -> tuple[list[int], dict[int, float], dict[int, float]]:
    """The ``n`` candidates of lowest NLL without them (one-shot, on the model without
    ``removed``), screened on ``coarse_model``: ``(chosen, screened NLLs, rescored NLLs)``.

    The cut lies between the ``n``-th and ``n + 1``-th screened NLL; those two and the
    candidates within the margin of the cut are rescored and those values decide among
    them; every candidate below the margin is in, every one above it out (:func:`rescore`)."""
    coarse = nll_without(coarse_model, calibration, removed, candidates, batch_size)
    order = sorted(candidates, key=lambda b: (coarse[b], b))
    if n <= 0 or n >= len(order):
        return order[:max(n, 0)], coarse, {}
    cut = (coarse[order[n - 1]] + coarse[order[n]]) / 2
    edge = {order[n - 1], order[n]}  # always rescored: the screen's error is seen
    fine, margin = rescore(model, calibration, removed, coarse, margin, batch_size,
                           lambda c, m: [b for b in c if abs(c[b] - cut) <= m or b in edge])
    sure = [b for b in order if coarse[b] < cut - margin and b not in fine]
    chosen = sure + sorted(fine, key=lambda b: (fine[b], b))[:n - len(sure)]
    return chosen, coarse, fine


# --------------------------------------------------------------------------- hidden states

class HiddenStateScorer(Protocol):
    def update(self, hidden: list[torch.Tensor]) -> None:
        """``hidden[i]``: the input of block ``i`` ([batch, seq, hidden]); ``hidden[-1]``
        the output of the last block."""


@torch.no_grad()
def scan_hidden_states(model, calibration: torch.Tensor, batch_size: int, *scorers: HiddenStateScorer) -> None:
    """One forward pass of the decoder over ``calibration``; every batch's residual stream
    at the ``n_layers + 1`` block boundaries goes to each scorer.

    ``output_hidden_states`` gives the embeddings and each block's output, but its last
    entry has the final norm applied: the last block's raw output is taken from a hook.

    With ``PRUNEBENCH_SCORE_CACHE`` set (the prune rule sets it), the boundaries are kept
    there (``hidden``, :func:`prunebench.score_cache.open_tensors`: one float tensor per batch
    and boundary) and read back by the next job on the same model, calibration tokens and
    batch size (ShortGPT and angular distance at every budget): the same tensors, one pass.
    """
    from .. import score_cache

    device = next(model.parameters()).device
    store = score_cache.open_tensors(model, calibration, batch_size, "hidden")
    starts = range(0, calibration.shape[0], batch_size)
    n = len(model.model.layers) + 1
    kept = store.load()
    if kept is not None and all(f"{s}.{i}" in kept for s in starts for i in range(n)):
        for s in starts:
            hidden = [kept[f"{s}.{i}"].to(device) for i in range(n)]
            for sc in scorers:
                sc.update(hidden)
        return
    last: list[torch.Tensor] = []
    seen: dict[str, torch.Tensor] = {}

    def grab(_mod, _args, out):
        last.append(out[0] if isinstance(out, tuple) else out)

    handle = model.model.layers[-1].register_forward_hook(grab)
    try:
        for start in starts:
            x = calibration[start:start + batch_size].to(device)
            out = model.model(input_ids=x, use_cache=False, output_hidden_states=True)
            hidden = list(out.hidden_states[:-1]) + [last.pop()]
            if store.path is not None:
                seen.update({f"{start}.{i}": h.detach().cpu() for i, h in enumerate(hidden)})
            for sc in scorers:
                sc.update(hidden)
    finally:
        handle.remove()
    if seen:
        store.save(seen)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every token's vectors ([..., hidden] -> [...]), in float64:
    neighbouring hidden states are nearly parallel, and 1 - cos is what gets ranked."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)


# --------------------------------------------------------------------------- report

def removal_report(model, drop: list[int], n_layers: int, total: int, per_block: list[int],
                   keep_first: int, keep_last: int) -> dict:
    """Remove ``drop`` and describe it: the fields every depth method reports."""
    remove_blocks(model, drop)
    after = count_params(model)
    return {
        "protected": {"first": keep_first, "last": keep_last},
        "removed_blocks": sorted(drop),
        "kept_blocks": [i for i in range(n_layers) if i not in drop],
        "num_layers_before": n_layers,
        "num_layers_after": n_layers - len(drop),
        "params_before": total,
        "params_after": after,
        "params_per_block": per_block,
    }


def remove_lowest(model, scores: list[float], budget: Budget, keep_first: int, keep_last: int) -> dict:
    """Remove the lowest-scoring removable blocks, as many as land closest to the budget."""
    n_layers = len(model.model.layers)
    total, per_block = count_params(model), block_params(model)
    order = sorted(removable(n_layers, keep_first, keep_last), key=lambda i: scores[i])  # least important first
    n_remove = solve_num_blocks(total, per_block, order, budget.target_params)
    return removal_report(model, sorted(order[:n_remove]), n_layers, total, per_block, keep_first, keep_last)
