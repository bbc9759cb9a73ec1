"""Calibration passes shared by the width methods (``flap`` aside, which keeps its own):
hooks that hand the input of chosen modules to scorers over a pass of the decoder
(:func:`feed_calibration`; ``minitron``), and the residual stream kept layer by layer for a
method that scores each layer on the model whose earlier layers are already pruned
(:class:`LayerByLayer`; ``wanda-sp``).
"""
from __future__ import annotations

import torch


class _Stop(Exception):
    """Raised after the module whose output is no longer needed has run."""


def _hooked(inputs: dict) -> list:
    return [m.register_forward_pre_hook(lambda _m, args, fn=fn: fn(args[0].detach())) for m, fn in inputs.items()]


class LayerByLayer:
    """The calibration windows' residual stream, kept block by block, for methods that score
    block ``i`` on the model whose blocks before it are already pruned (Wanda-sp).

    Holds the input of the current block for every batch.  :meth:`feed` runs block ``i`` on
    it (``inputs[module](x)`` sees every batch's input of ``module``, as in
    :func:`feed_calibration`); :meth:`advance` runs block ``i`` as it is now (pruned) and
    keeps its output as the next block's input.  Block ``i`` sees exactly the input a full
    pass of the model with blocks ``0 .. i-1`` as they are would give it (the same
    positions and causal mask: the model runs with every other block left out, the block's
    input given by :class:`~prunebench.methods.blocks.Feed`), but each block runs twice in all instead of once per later block.
    """

    def __init__(self, model, calibration: torch.Tensor, batch_size: int):
        self.model = model
        self.states: list[torch.Tensor] = []
        hook = model.model.layers[0].register_forward_pre_hook(lambda _m, args: self._stop(args[0]))
        try:
            _each_batch(model, calibration, batch_size)
        finally:
            hook.remove()

    def _stop(self, x: torch.Tensor):
        self.states.append(x.detach())
        raise _Stop

    @torch.no_grad()
    def _run(self, i: int, inputs: dict) -> list[torch.Tensor]:
        from .blocks import Feed, Skip, dummy_ids

        out: list[torch.Tensor] = []
        layers = self.model.model.layers

        def grab(_m, _args, output):  # the block's output; the final norm is not needed
            out.append((output[0] if isinstance(output, tuple) else output).detach())
            raise _Stop

        handles = _hooked(inputs) + [layers[i].register_forward_hook(grab)]
        try:
            with Skip(self.model, [j for j in range(len(layers)) if j != i]):
                for h in self.states:
                    try:
                        with Feed(self.model, h):
                            self.model.model(input_ids=dummy_ids(h), use_cache=False)
                    except _Stop:
                        pass
        finally:
            for hd in handles:
                hd.remove()
        return out

    def feed(self, i: int, inputs: dict) -> None:
        """Run block ``i`` on its input, every batch, with ``inputs``' hooks."""
        self._run(i, inputs)

    def advance(self, i: int) -> None:
        """Block ``i`` as it is now: its output becomes the input of block ``i + 1``."""
        self.states = self._run(i, {})


@torch.no_grad()
def feed_calibration(model, calibration: torch.Tensor, batch_size: int, inputs: dict, stop_after=None) -> None:
    """Run the decoder over ``calibration``; ``inputs[module](x)`` sees every batch's input
    of ``module`` ([batch, seq, features]).  With ``stop_after`` (a module), each batch
    stops once it has run: the layers after it are not computed."""
    handles = _hooked(inputs)
    if stop_after is not None:
        def stop(*_):
            raise _Stop

        handles.append(stop_after.register_forward_hook(stop))
    try:
        _each_batch(model, calibration, batch_size)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _each_batch(model, calibration: torch.Tensor, batch_size: int) -> None:
    """The decoder over every batch of ``calibration``; a hook raising ``_Stop`` ends a batch."""
    device = next(model.parameters()).device
    for start in range(0, calibration.shape[0], batch_size):
        try:
            model.model(input_ids=calibration[start:start + batch_size].to(device), use_cache=False)
        except _Stop:
            pass
