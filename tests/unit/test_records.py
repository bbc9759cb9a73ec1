"""The perplexity records and prune reports: tagged with their format, read back checked; a
diverged evaluation is its own status; the stages refuse inputs written for another model
(model folders, token windows)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_arch, tiny_model_of
from prunebench.io import ArtifactError
from prunebench.records import PERPLEXITY_SCHEMA, PRUNE_REPORT_SCHEMA, read_perplexity, read_prune_report


@pytest.fixture
def scored(tmp_path):
    """A model folder ("t", "dense") and two corpora's evaluation windows tokenised for "t"."""
    from prunebench.data import save_tokens
    from prunebench.models import save_model

    save_model(tiny_model_of(tiny_arch(gqa=True)), tmp_path / "dense", model_name="t", method="dense",
               weights="safetensors")
    data = {}
    for name in ("a", "b"):
        data[name] = str(tmp_path / f"eval-{name}.safetensors")
        save_tokens(data[name], torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(3)),
                    {"model": "t", "corpus": name})
    return tmp_path, data


def _score(tmp_path, data, model_name="t", folder="dense"):
    from prunebench import perplexity

    out = tmp_path / f"{folder}.json"
    perplexity.run({folder: {"model_dir": str(tmp_path / folder), "out_path": str(out)}}, data,
                   model_name=model_name, batch_size=2, device="cpu", dtype="float32")
    return out


def test_perplexity_record_is_tagged_and_read_back_checked(scored):
    tmp_path, data = scored
    out = _score(tmp_path, data)
    rec = read_perplexity(out, model="t", method="dense")
    assert rec["schema"] == PERPLEXITY_SCHEMA and rec["status"] == "ok"
    assert {c["status"] for c in rec["corpora"].values()} == {"ok"} and rec["ppl"] > 1
    with pytest.raises(ArtifactError, match=r"dense\.json: method is 'dense' but the name asked for is 'depth'"):
        read_perplexity(out, method="depth")


@pytest.mark.parametrize("window_nll,needle", [
    (float("nan"), r"1 of 4 windows have a non-finite mean NLL \(1 NaN\)"),
    (float("inf"), r"1 of 4 windows have a non-finite mean NLL \(1 infinite\)"),
    (800.0, r"the mean NLL \(.*\) is too large for exp .*the perplexity overflows"),
])
def test_diverged_evaluation_is_not_ok(scored, monkeypatch, window_nll, needle):
    """A NaN or infinite window, or a mean NLL whose exp overflows: status 'diverged', saying
    what, never 'ok' with a null perplexity."""
    from prunebench import perplexity

    tmp_path, data = scored
    real = perplexity.window_nlls

    def diverging(model, ids, *a, desc="", **k):
        nlls = real(model, ids, *a, desc=desc, **k)
        if desc.endswith(" a"):  # corpus a diverges, corpus b does not
            nlls = nlls.clone()
            if window_nll == 800.0:
                nlls[:] = window_nll
            else:
                nlls[1] = window_nll
        return nlls

    monkeypatch.setattr(perplexity, "window_nlls", diverging)
    rec = json.loads(_score(tmp_path, data).read_text())
    assert rec["status"] == "diverged" and rec["ppl"] is None
    a, b = rec["corpora"]["a"], rec["corpora"]["b"]
    assert a["status"] == "diverged" and a["ppl"] is None
    assert b["status"] == "ok" and b["diverged"] is None and b["ppl"] > 1
    import re

    assert re.search(needle, a["diverged"]) and re.search("a: " + needle, rec["reason"])
    assert read_perplexity(tmp_path / "dense.json")["status"] == "diverged"


def _write(path, rec):
    path.write_text(json.dumps(rec))
    return path


def test_perplexity_reader_refuses_unknown_tags_and_ok_without_a_perplexity(tmp_path):
    rec = {"schema": PERPLEXITY_SCHEMA, "model": "t", "method": "dense", "params": 10, "status": "ok",
           "ppl": 12.0, "corpora": {"a": {"ppl": 12.0, "status": "ok"}}}
    assert read_perplexity(_write(tmp_path / "ok.json", rec)) == rec
    untagged = {k: v for k, v in rec.items() if k != "schema"}  # written before the tags: version 1
    assert read_perplexity(_write(tmp_path / "old.json", untagged)) == untagged
    with pytest.raises(ArtifactError, match=r"old_null\.json: status 'ok' without a finite perplexity"):
        read_perplexity(_write(tmp_path / "old_null.json", {**untagged, "ppl": None}))
    with pytest.raises(ArtifactError, match=r"next\.json: schema is 'prunebench-perplexity/2', this prunebench "
                                            r"reads 'prunebench-perplexity/1'"):
        read_perplexity(_write(tmp_path / "next.json", {**rec, "schema": "prunebench-perplexity/2"}))
    with pytest.raises(ArtifactError, match=r"cell\.json: schema is 'prunebench-bench-cell/2'"):
        read_perplexity(_write(tmp_path / "cell.json", {**rec, "schema": "prunebench-bench-cell/2"}))
    with pytest.raises(ArtifactError, match=r"null\.json: status 'ok' without a finite perplexity"):
        read_perplexity(_write(tmp_path / "null.json", {**rec, "ppl": None}))
    with pytest.raises(ArtifactError, match=r"corpus\.json: status 'ok' without a finite perplexity \(corpora \['a'\]\)"):
        read_perplexity(_write(tmp_path / "corpus.json", {**rec, "corpora": {"a": {"ppl": None}}}))
    with pytest.raises(ArtifactError, match=r"odd\.json: status 'fine' is not one of"):
        read_perplexity(_write(tmp_path / "odd.json", {**rec, "status": "fine"}))


def test_prune_report_is_tagged_and_read_back_checked(base):
    from prunebench import prune

    rep = prune.run(str(base / "base"), "", str(base / "out"), str(base / "report.json"), model_name="tiny",
                    method_name="dense", method_spec={"method": "dense"}, budget_cfg=None, device="cpu",
                    dtype="float32")
    assert rep["schema"] == PRUNE_REPORT_SCHEMA
    assert read_prune_report(base / "report.json", model="tiny", method="dense")["params_after"] == rep["params_after"]
    with pytest.raises(ArtifactError, match=r"report\.json: model is 'tiny' but the name asked for is 'other'"):
        read_prune_report(base / "report.json", model="other")
    untagged = {k: v for k, v in rep.items() if k != "schema"}
    assert read_prune_report(_write(base / "old.json", untagged)) == untagged  # before the tags: version 1
    with pytest.raises(ArtifactError, match=r"ppl\.json: schema is 'prunebench-perplexity/1'"):
        read_prune_report(_write(base / "ppl.json", {**rep, "schema": PERPLEXITY_SCHEMA}))


def test_prune_refuses_another_models_base_folder_and_windows(base):
    from prunebench import prune
    from prunebench.data import save_tokens

    def run(model_name, calibration):
        return prune.run(str(base / "base"), str(calibration), str(base / "out"), str(base / "report.json"),
                         model_name=model_name, method_name="d", method_spec={"method": "depth", "criterion": "ppl"},
                         budget_cfg={"ratio": 0.2}, device="cpu", dtype="float32")

    with pytest.raises(ArtifactError, match=r"base/prunebench\.json: model is 'tiny' but the name asked for is 'big'"):
        run("big", base / "calibration.safetensors")
    save_tokens(str(base / "other.safetensors"), torch.randint(0, 300, (2, 16)), {"model": "big"})
    with pytest.raises(ArtifactError, match=r"other\.json: the token ids are 'big''s, not 'tiny''s"):
        run("tiny", base / "other.safetensors")
    assert not (base / "report.json").exists()


def test_perplexity_refuses_another_models_folder_or_windows(scored):
    tmp_path, data = scored
    with pytest.raises(ArtifactError, match=r"eval-a\.json: the token ids are 't''s, not 'u''s"):
        _score(tmp_path, data, model_name="u")
    from prunebench.models import save_reference

    save_reference(tmp_path / "dense", tmp_path / "depth", model_name="t", method="flap")  # a mislabelled folder
    with pytest.raises(ArtifactError, match=r"depth/prunebench\.json: method is 'flap' but the name asked for is "
                                            r"'depth'"):
        _score(tmp_path, data, folder="depth")


def test_token_windows_need_their_matching_sidecar(tmp_path):
    from prunebench.data import load_tokens, save_tokens, sidecar

    path = tmp_path / "calibration.safetensors"
    save_tokens(str(path), torch.zeros(3, 8, dtype=torch.long), {"model": "m", "split": "calibration"})
    ids, meta = load_tokens(path, model="m")
    assert meta["shape"] == [3, 8] == list(ids.shape)
    side = sidecar(path)
    good = json.loads(side.read_text())
    side.write_text(json.dumps({**good, "shape": [4, 8]}))
    with pytest.raises(ArtifactError, match=r"calibration\.json: shape \[4, 8\] but .*calibration\.safetensors "
                                            r"holds \[3, 8\]"):
        load_tokens(path)
    side.write_text(json.dumps({k: v for k, v in good.items() if k != "model"}))
    with pytest.raises(ArtifactError, match=r"calibration\.json: missing field\(s\) \['model'\]"):
        load_tokens(path, model="m")
    side.unlink()
    with pytest.raises(ArtifactError, match=r"calibration\.json: file not found; the token ids .* come with it"):
        load_tokens(path)


def test_quality_table_reads_each_corpus_status_and_needs_the_prune_report(tmp_path):
    """A corpus that diverged is tabled as such beside one that did not; a perplexity record
    without its prune report is refused (its parameter ratio would silently be 1)."""
    from prunebench.aggregate import quality_table

    ppl = _write(tmp_path / "ppl.json", {
        "schema": PERPLEXITY_SCHEMA, "model": "t", "method": "flap", "params": 5, "status": "diverged",
        "ppl": None, "reason": "corpus b diverged",
        "corpora": {"a": {"ppl": 3.0, "status": "ok"}, "b": {"ppl": None, "status": "diverged"}}})
    rep = _write(tmp_path / "rep.json", {"model": "t", "method": "flap", "algorithm": "flap", "params_before": 10,
                                         "params_after": 5})
    table = quality_table([ppl], [rep], {}).set_index("corpus")
    assert table.loc["a", "ppl_status"] == "ok" and table.loc["b", "ppl_status"] == "diverged"
    assert table.loc["a", "params_ratio"] == 0.5
    other = _write(tmp_path / "other.json", {"model": "t", "method": "dense", "algorithm": "dense", "params_after": 10})
    with pytest.raises(ArtifactError, match=r"ppl\.json: no prune report of model 't', method 'flap'"):
        quality_table([ppl], [other], {})
