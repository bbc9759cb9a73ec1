"""``depth``: remove whole transformer blocks (Shortened LLaMA, Kim et al. 2024).

Settings (``methods.<name>`` in the config):

``criterion``
    ``ppl``    -- remove one block at a time and measure the perplexity of the
                  calibration samples without it; the blocks whose removal hurts
                  least (lowest PPL) go.
    ``taylor`` -- Taylor+: score a block by sum |W * dL/dW| over its weights, L the
                  calibration loss; the lowest-scoring blocks go, but never the first
                  ``keep_first`` (4) nor the last ``keep_last`` (2) blocks.
    ``random`` -- a seeded random choice of blocks (``seed``): the control that shows
                  whether a criterion is better than chance.
``keep_first``, ``keep_last``
    blocks protected from removal (defaults: 0/0 for ``ppl``, 4/2 for ``taylor``).
``batch_size``
    calibration batch size for scoring.

The number of blocks to remove is solved from the budget: the count whose pruned
model has the parameter count closest to ``budget.target_params``.  Removal is
one-shot (all scores computed on the dense model), as in the paper.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..models import count_params, renumber_layers
from ..perplexity import mean_nll
from .base import ArchInfo, Budget, PrunedModel, Reach, register

DEFAULT_KEEP = {"ppl": (0, 0), "taylor": (4, 2), "random": (0, 0)}


SCORE_MEANING = {
    "ppl": "calibration PPL without the block (higher = more important)",
    "taylor": "sum |W*grad| of the block (higher = more important)",
    "random": "seeded uniform random number (control)",
}


def block_params(model) -> list[int]:
    return [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]


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


class _Skip:
    """Context manager: run the model with block ``i`` left out (no copy of weights)."""

    def __init__(self, model, i: int):
        self.model, self.i = model, i

    def __enter__(self):
        m = self.model
        self.layers, self.n = m.model.layers, m.config.num_hidden_layers
        m.model.layers = torch.nn.ModuleList([l for j, l in enumerate(self.layers) if j != self.i])
        m.config.num_hidden_layers = self.n - 1

    def __exit__(self, *exc):
        self.model.model.layers = self.layers
        self.model.config.num_hidden_layers = self.n


def ppl_scores(model, calibration: torch.Tensor, batch_size: int) -> list[float]:
    scores = []
    for i in tqdm(range(len(model.model.layers)), desc="PPL criterion: blocks", mininterval=2):
        with _Skip(model, i):
            scores.append(math.exp(min(mean_nll(model, calibration, batch_size), 700)))
    return scores


def taylor_scores(model, calibration: torch.Tensor, batch_size: int) -> list[float]:
    """Sum over each block's weights of |W * grad W|, gradient of the mean calibration NLL."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    for layer in model.model.layers:
        for p in layer.parameters():
            p.requires_grad_(True)
            p.grad = None
    n = calibration.shape[0]
    for start in tqdm(range(0, n, batch_size), desc="Taylor+: gradients", mininterval=2):
        x = calibration[start : start + batch_size].to(device)
        out = model(input_ids=x, labels=x, use_cache=False)
        (out.loss * x.shape[0] / n).backward()
    scores = []
    for layer in model.model.layers:
        s = 0.0
        for p in layer.parameters():
            if p.grad is not None:
                s += (p.detach().float() * p.grad.float()).abs().sum().item()
            p.grad = None
        scores.append(s)
    for p, f in zip(params, flags):
        p.requires_grad_(f)
    model.train(was_training)
    return scores


SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["criterion"],
    "properties": {
        "criterion": {"enum": ["ppl", "taylor", "random"]},
        "seed": {"type": "integer"},
        "keep_first": {"type": "integer", "minimum": 0},
        "keep_last": {"type": "integer", "minimum": 0},
        "batch_size": {"type": "integer", "minimum": 1},
    },
}


def _keep(settings: dict) -> tuple[int, int]:
    first, last = DEFAULT_KEEP.get(settings.get("criterion", "ppl"), (0, 0))
    return settings.get("keep_first", first), settings.get("keep_last", last)


def reachable(info: ArchInfo | None, settings: dict) -> Reach | None:
    """Whole blocks go: from one block removed down to one block left (never zero), among
    the blocks ``keep_first``/``keep_last`` leave removable; the result is the count closest
    to the budget, so within half a block of it."""
    if info is None:
        return None
    keep_first, keep_last = _keep(settings)
    n = info.n_layers
    removable = sorted(info.block_params[keep_first:max(keep_first, n - keep_last)])
    if not removable:
        raise ValueError(f"keep_first: keep_first ({keep_first}) + keep_last ({keep_last}) protect all {n} "
                         "blocks of the model: no block can be removed")
    most = min(len(removable), n - 1)
    if most == 0:
        raise ValueError(f"keep_first: the model has {n} block; removing it would leave none")
    low = info.total - sum(removable[-most:])
    return Reach(low=low, high=info.total - removable[0], tolerance=removable[-1] / 2 / low,
                 unit=f"whole blocks of {removable[-1]:,} parameters, at most {most} of {n}")


@register("depth", SETTINGS, reachable)
def prune(model, calibration: torch.Tensor, budget: Budget, settings: dict) -> PrunedModel:
    criterion = settings.get("criterion", "ppl")
    if criterion not in DEFAULT_KEEP:
        raise ValueError(f"methods.*.criterion: unknown depth criterion {criterion!r}; expected {sorted(DEFAULT_KEEP)}")
    keep_first, keep_last = DEFAULT_KEEP[criterion]
    keep_first = settings.get("keep_first", keep_first)
    keep_last = settings.get("keep_last", keep_last)
    bs = settings.get("batch_size", 8)
    n_layers = len(model.model.layers)
    total = count_params(model)
    per_block = block_params(model)

    if criterion == "ppl":
        scores = ppl_scores(model, calibration, bs)
    elif criterion == "taylor":
        scores = taylor_scores(model, calibration, bs)
    else:
        g = torch.Generator().manual_seed(settings.get("seed", 0))
        scores = torch.rand(n_layers, generator=g).tolist()
    removable = [i for i in range(keep_first, n_layers - keep_last)]
    order = sorted(removable, key=lambda i: scores[i])  # least important first
    n_remove = solve_num_blocks(total, per_block, order, budget.target_params)
    drop = sorted(order[:n_remove])
    remove_blocks(model, drop)
    after = count_params(model)
    return PrunedModel(
        model,
        {
            "criterion": criterion,
            "scores": scores,
            "score_meaning": SCORE_MEANING[criterion],
            "protected": {"first": keep_first, "last": keep_last},
            "removed_blocks": drop,
            "kept_blocks": [i for i in range(n_layers) if i not in drop],
            "num_layers_before": n_layers,
            "num_layers_after": n_layers - len(drop),
            "params_before": total,
            "params_after": after,
            "params_per_block": per_block,
        },
    )
