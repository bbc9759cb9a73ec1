"""The perplexity of a block-pruned model started from the base model's recorded block
inputs is the plain computation's, bit for bit; a model that differs from block 0 on (width
pruning) or settings that differ (another batch size) start from the tokens."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_arch, tiny_model_of


def _folders(tmp_path, drop):
    from prunebench.methods.blocks import remove_blocks
    from prunebench.models import save_model, save_reference

    base = tiny_model_of(tiny_arch(gqa=True))
    save_model(base, tmp_path / "base", model_name="t", method="base", weights="safetensors")
    save_reference(tmp_path / "base", tmp_path / "dense", model_name="t", method="dense")
    pruned = tiny_model_of(tiny_arch(gqa=True))
    remove_blocks(pruned, drop)
    save_model(pruned, tmp_path / "pruned", model_name="t", method="pruned", weights="safetensors")
    width = tiny_model_of(tiny_arch(gqa=True))
    with torch.no_grad():
        width.model.layers[0].mlp.down_proj.weight.mul_(0.5)  # differs at block 0
    remove_blocks(width, drop)
    save_model(width, tmp_path / "width", model_name="t", method="width", weights="safetensors")


def _data(tmp_path):
    from prunebench.data import save_tokens

    paths = {}
    for i, name in enumerate(["a", "b"]):
        ids = torch.randint(0, 300, (7, 24), generator=torch.Generator().manual_seed(10 + i))
        paths[name] = str(tmp_path / f"eval-{name}.safetensors")
        save_tokens(paths[name], ids, {"model": "t", "corpus": name})
    return paths


def _ppl(tmp_path, folder, data, states, batch_size=3):
    from prunebench.perplexity import run

    out = tmp_path / f"{folder}-{batch_size}-{bool(states)}.json"
    run({folder: {"model_dir": str(tmp_path / folder), "out_path": str(out)}}, data, model_name="t",
        batch_size=batch_size, device="cpu", dtype="float32", states_dir=states)
    return json.loads(out.read_text())


@pytest.mark.parametrize("drop", [[3, 5], [1], [6, 7]])
def test_started_from_recorded_inputs_equals_plain(tmp_path, drop):
    _folders(tmp_path, drop)
    data = _data(tmp_path)
    states = str(tmp_path / "states")
    plain = {f: _ppl(tmp_path, f, data, "") for f in ("dense", "pruned", "width")}
    dense = _ppl(tmp_path, "dense", data, states)
    assert len(list((tmp_path / "states").glob("*.safetensors"))) == 2  # one per corpus
    pruned = _ppl(tmp_path, "pruned", data, states)
    width = _ppl(tmp_path, "width", data, states)
    for got, want in ((dense, plain["dense"]), (pruned, plain["pruned"]), (width, plain["width"])):
        for c in ("a", "b"):
            assert got["corpora"][c]["nll"] == want["corpora"][c]["nll"]  # bit for bit
            assert got["corpora"][c]["nll_ci_high"] == want["corpora"][c]["nll_ci_high"]
    # from the first removed block; the pruned model's last block always runs
    assert {c["first_block_run"] for c in pruned["corpora"].values()} == {min(drop[0], 8 - len(drop) - 1)}
    assert {c["first_block_run"] for c in width["corpora"].values()} == {0}
    assert {c["first_block_run"] for c in dense["corpora"].values()} == {0}
    # another batch size: another key, scored from the tokens (and the same numbers)
    other = _ppl(tmp_path, "pruned", data, states, batch_size=2)
    assert {c["first_block_run"] for c in other["corpora"].values()} == {0}
    assert other["corpora"]["a"]["nll"] == pytest.approx(plain["pruned"]["corpora"]["a"]["nll"], rel=1e-6)


def test_recorded_inputs_are_the_plain_block_inputs(tmp_path):
    """What the base model's job records is each block's input in a plain forward pass."""
    from prunebench.perplexity import window_nlls

    model = tiny_model_of(tiny_arch())
    ids = torch.randint(0, 300, (5, 16), generator=torch.Generator().manual_seed(3))
    seen: list = []
    window_nlls(model, ids, batch_size=2, record=seen)
    out = model.model(input_ids=ids, use_cache=False, output_hidden_states=True)
    assert len(seen) == 8
    for k in range(8):
        torch.testing.assert_close(seen[k], out.hidden_states[k], rtol=1e-5, atol=1e-5)


def test_a_changed_block_stops_the_match(tmp_path):
    from prunebench import prefix_states

    model = tiny_model_of(tiny_arch())
    ids = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(4))
    store = prefix_states.open_for(str(tmp_path), model, ids, 2)
    store.record(model, ids, 2, [torch.full((4, 16, 64), float(k)) for k in range(8)])
    assert store.start(model, ids, 2)[0] == 7  # the same model: its last block still runs
    with torch.no_grad():
        model.model.layers[4].self_attn.o_proj.weight.add_(1e-3)
    k, given = store.start(model, ids, 2)
    assert k == 4 and torch.equal(given, torch.full((4, 16, 64), 4.0))
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1e-3)
    assert store.start(model, ids, 2) == (0, None)
