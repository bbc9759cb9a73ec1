"""The ``hf-eager`` backend: ``transformers``' ``model.generate`` as it is (the reference)."""
from __future__ import annotations

from typing import Callable

import torch


class _FirstToken:
    """A logits processor that calls ``callback`` the first time generate hands it logits:
    the prefill is done then (it changes no score)."""

    def __init__(self, callback: Callable[[], None]):
        self.callback, self.called = callback, False

    def __call__(self, input_ids, scores):
        if not self.called:
            self.called = True
            self.callback()
        return scores


def generate_once(model, prompt: torch.Tensor, new_tokens: int,
                  on_first_token: Callable[[], None] | None = None) -> torch.Tensor:
    """Greedy ``model.generate`` of exactly ``new_tokens`` tokens (EOS never chosen)."""
    kw = {}
    if on_first_token is not None:
        from transformers import LogitsProcessorList

        kw["logits_processor"] = LogitsProcessorList([_FirstToken(on_first_token)])
    return model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        min_new_tokens=new_tokens,
        max_new_tokens=new_tokens,
        pad_token_id=0,
        use_cache=True,
        **kw,
    )


class HFEagerBackend:
    """``model.generate`` as it is (the reference)."""

    name = "hf-eager"

    def __init__(self):
        self.model = None

    def prepare(self, model, batch: int, in_len: int, out_len: int) -> dict:
        self.model = model
        return {"compile_s": 0.0}

    def generate(self, prompt: torch.Tensor, out_len: int,
                 on_first_token: Callable[[], None] | None = None) -> torch.Tensor:
        return generate_once(self.model, prompt, out_len, on_first_token)
