"""Shared fixtures: tiny random LLaMA models (MHA and GQA), an offline tokenizer, text;
checks shared by the width-pruning tests."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import os

import pytest
import torch

# The Triton GEMV (prunebench.gemv) runs on the CPU through Triton's interpreter, which Triton
# only wires up when this is set before `triton.language` is imported (transformers imports it).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORDS = ("the a one every some old young quiet bright small great dark green cold "
         "river house garden letter sister friend morning evening window road city "
         "walked wrote found kept spoke loved heard carried opened watched remembered "
         "slowly gladly never always near under over beside through after before").split()


def make_text(n_docs: int = 40, seed: int = 0) -> str:
    """Deterministic English-like text: documents of sentences, blank-line separated."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(rng.randint(4, 9)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
            sents.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sents))
    return "\n\n".join(docs) + "\n"


def tiny_arch(gqa: bool = False, layers: int = 8, vocab: int = 300) -> dict:
    return dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                num_attention_heads=8, num_key_value_heads=2 if gqa else 8, vocab_size=vocab,
                max_position_embeddings=512, tie_word_embeddings=False)


def tiny_model_of(arch: dict, seed: int = 0, attn: str | None = None):
    """The one tiny-model factory: a LLaMA-family ``*ForCausalLM`` of ``arch`` (a config dict
    as ``tiny_arch`` gives, ``model_type`` optional), its weights from ``torch.manual_seed(seed)``,
    in eval mode; ``attn`` sets ``attn_implementation``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    a = dict(arch)
    kind = a.pop("model_type", "llama")
    torch.manual_seed(seed)
    extra = {} if attn is None else {"attn_implementation": attn}
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **a), **extra).eval()


def train_tokenizer(text: str, vocab: int, out_dir: Path):
    """A byte-level BPE tokenizer trained offline on ``text`` and saved to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.split("\n"), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    fast.save_pretrained(out_dir)
    return fast


def make_pretrained(out_dir: Path, arch: dict, text: str, seed: int = 0) -> Path:
    """A local 'pretrained' folder: random weights + config + trained tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    a = dict(arch)
    cfg = AutoConfig.for_model(a.pop("model_type"), **a)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out_dir)
    train_tokenizer(text, arch["vocab_size"], out_dir)
    return out_dir


@pytest.fixture(scope="session")
def text() -> str:
    return make_text()


@pytest.fixture(params=[False, True], ids=["mha", "gqa"])
def tiny_model(request):
    return tiny_model_of(tiny_arch(gqa=request.param))


@pytest.fixture
def calib():
    import torch

    return torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(1))


def tiny_llama(heads: int, kv_heads: int, layers: int = 8, seed: int = 0, tied: bool = False):
    """A tiny LlamaForCausalLM (hidden 64, vocab 128) with the given attention layout."""
    return tiny_model_of(dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=64 // heads,
                              tie_word_embeddings=tied, max_position_embeddings=64), seed)


def calibration(n: int = 8, seq: int = 32, seed: int = 1):
    """Seeded random token ids for the tiny_llama vocabulary."""
    import torch

    return torch.randint(0, 128, (n, seq), generator=torch.Generator().manual_seed(seed))


def kept_columns(dense_w, pruned_w) -> list[int]:
    """Which input columns of ``dense_w`` survive in ``pruned_w`` (exact match, in order)."""
    out = []
    for j in range(pruned_w.shape[1]):
        hits = (dense_w == pruned_w[:, j:j + 1]).all(0).nonzero().flatten().tolist()
        assert len(hits) == 1
        out.append(hits[0])
    return out


def assert_masked_dense(dense, pruned):
    """Without bias compensation, the pruned model is the dense one with the removed heads /
    channels zeroed at the o_proj / down_proj input: q/k/v/o and gate/up/down cut alike."""
    import copy

    import torch

    ref = copy.deepcopy(dense)
    x = calibration(2, 16, seed=5)
    with torch.no_grad():
        for dl, pl in zip(ref.model.layers, pruned.model.layers):
            for dmod, pmod in ((dl.self_attn.o_proj, pl.self_attn.o_proj), (dl.mlp.down_proj, pl.mlp.down_proj)):
                mask = torch.zeros(dmod.in_features, dtype=torch.bool)
                mask[kept_columns(dmod.weight, pmod.weight)] = True
                dmod.weight[:, ~mask] = 0
        torch.testing.assert_close(pruned(input_ids=x).logits, ref(input_ids=x).logits, rtol=1e-4, atol=1e-5)


@pytest.fixture
def base(tmp_path):
    """A base model folder (random weights, seeded) and calibration windows."""
    from transformers import AutoConfig

    from prunebench.data import save_tokens
    from prunebench.models import build_random, save_model

    a = tiny_arch(gqa=True)
    a.pop("model_type")
    model = build_random(AutoConfig.for_model("llama", **a), torch.float32, "cpu", seed=0)
    save_model(model, tmp_path / "base", model_name="tiny", method="base", weights="random")
    save_tokens(str(tmp_path / "calibration.safetensors"), torch.randint(0, 300, (2, 16)),
                {"model": "tiny", "split": "calibration"})
    return tmp_path
