"""Artifacts: atomic writes, clear errors for corrupt files, the model-folder format, tables, figure."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from prunebench import aggregate, figure
from prunebench.io import ArtifactError, atomic_path, read_json, write_json
from prunebench.models import load_model, read_manifest, save_model, save_reference


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "a.json"
    write_json(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text('{"v": 2')  # half written
            raise RuntimeError("killed")
    assert read_json(p) == {"v": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_truncated_json_names_the_file(tmp_path):
    p = tmp_path / "cell.json"
    p.write_text('{"status": "ok", "lat')
    with pytest.raises(ArtifactError, match=r"cell\.json: not valid JSON"):
        read_json(p)


def test_missing_fields_named(tmp_path):
    p = tmp_path / "cell.json"
    p.write_text("{}")
    with pytest.raises(ArtifactError, match="missing field"):
        read_json(p, required=("status",))


def test_truncated_safetensors_names_the_file(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path, model_name="t", method="dense", weights="safetensors")
    st = tmp_path / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"model\.safetensors: cannot be read"):
        load_model(tmp_path)


def test_folder_without_manifest_is_not_a_model(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path, model_name="t", method="dense", weights="safetensors")
    (tmp_path / "prunebench.json").unlink()
    with pytest.raises(ArtifactError, match="prunebench.json: file not found"):
        load_model(tmp_path)


def test_reference_and_random_folders(tiny_model, tmp_path):
    base = tmp_path / "base"
    save_model(tiny_model, base, model_name="t", method="base", weights="safetensors")
    ref = save_reference(base, tmp_path / "dense", model_name="t", method="dense")
    assert ref["weights"] == "base" and ref["params"] == read_manifest(base)["params"]
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "dense")(input_ids=x).logits,
                                   tiny_model(input_ids=x).logits)
    save_model(tiny_model, tmp_path / "rand", model_name="t", method="base", weights="random", seed=3)
    assert not (tmp_path / "rand" / "model.safetensors").exists()
    a, b = load_model(tmp_path / "rand"), load_model(tmp_path / "rand")
    torch.testing.assert_close(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)


def _cell(tmp_path, method, batch, latency, status="ok", params=100, backend="hf-eager"):
    rec = {"schema": "prunebench-bench-cell/2", "model": "m", "method": method, "backend": backend, "in_len": 12,
           "out_len": 16, "batch": batch, "params": params, "num_layers": 4, "latency_s": latency,
           "latency_p10_s": latency, "latency_p90_s": latency,
           "throughput_tok_s": batch * 16 / latency if latency else None, "status": status,
           "device": "cpu", "device_name": "cpu", "dtype": "float32", "weights": "random",
           "versions": {"torch": "t", "transformers": "x"}}
    p = tmp_path / "bench" / "m" / method / backend / f"in12_out16_bs{batch}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rec))
    return str(p)


def test_tables_and_figure(tmp_path):
    cells = [_cell(tmp_path, "dense", b, 0.1 * b ** 0.5, params=200) for b in (1, 4, 16)]
    cells += [_cell(tmp_path, "depth", b, 0.07 * b ** 0.5) for b in (1, 4)]
    cells += [_cell(tmp_path, "depth", 16, None, status="oom")]
    aggregate.run(cells, [], [], str(tmp_path / "b.csv"), str(tmp_path / "q.csv"), {"m": "Fam"})
    df = pd.read_csv(tmp_path / "b.csv")
    assert list(df.columns) == aggregate.BENCH_COLUMNS
    assert len(df) == 6 and set(df["family"]) == {"Fam"}
    assert df.loc[df["status"] == "oom", "throughput_tok_s"].isna().all()
    assert df["backend_info"].isna().all()  # cells without the field (older files): empty
    figure.run(str(tmp_path / "b.csv"), str(tmp_path / "f.png"), str(tmp_path / "f.pdf"))
    assert (tmp_path / "f.png").stat().st_size > 5000
    pdf = (tmp_path / "f.pdf").read_bytes()
    assert pdf[:4] == b"%PDF"
    figure.run(str(tmp_path / "b.csv"), str(tmp_path / "g.png"), str(tmp_path / "g.pdf"))
    assert (tmp_path / "g.pdf").read_bytes() == pdf  # no date inside: a rerun changes no byte
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "f.png").read_bytes()


def test_figure_layout_rows_and_panels(tmp_path):
    rows = []
    for fam in ("A", "B"):
        for i in (12, 82):
            for o in (128, 512):
                for m in ("dense", "depth"):
                    for b in (1, 8):
                        rows.append({"model": fam, "family": fam, "method": m, "backend": "hf-eager",
                                     "params": 1e9, "in_len": i, "out_len": o, "batch": b,
                                     "latency_s": 1.0 + b / 10, "throughput_tok_s": b * o / (1.0 + b / 10),
                                     "status": "ok", "device_name": "cpu", "dtype": "float16", "weights": "random"})
    fig = figure.draw(pd.DataFrame(rows))
    axes = fig.get_axes()
    assert len(axes) == 2 * 4
    ax = axes[0]
    assert ax.get_yscale() == "log" and ax.yaxis.get_transform().base == 2
    assert len(ax.get_lines()) == 2  # one line per method
    assert "A: in 12 / out 128" in ax.get_title()


def test_figure_panel_with_one_batch_size_shows_every_point():
    """A panel where each method has one point (one batch size measured): every point lies
    inside the axes, away from the edges, and the log2 y axis spans two octaves (so it has
    labelled ticks) even though the points are within 50 % of each other."""
    import math

    rows = [{"model": "A", "family": "A", "method": m, "backend": "hf-eager", "params": 1e9, "in_len": 82,
             "out_len": 512, "batch": 1, "latency_s": lat, "throughput_tok_s": 512 / lat, "status": "ok",
             "device_name": "cpu", "dtype": "float16", "weights": "random"}
            for m, lat in (("dense", 13.9), ("depth", 9.6), ("flap", 12.7), ("width", 14.3))]
    ax = figure.draw(pd.DataFrame(rows)).get_axes()[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for r in rows:
        assert x0 < r["latency_s"] < x1 and y0 < r["throughput_tok_s"] < y1
        assert min(r["latency_s"] - x0, x1 - r["latency_s"]) > 0.05 * (x1 - x0)
    assert math.log2(y1 / y0) >= 2
    ticks = [t for t in ax.get_yticks() if y0 <= t <= y1]
    assert len(ticks) >= 2 and all(math.log2(t).is_integer() for t in ticks)


def test_figure_title_fits_a_one_panel_figure():
    """A one-panel figure (one family, one input/output pair) keeps its long title inside."""
    rows = [{"model": "A", "family": "A", "method": "dense", "backend": "compiled", "params": 1e9, "in_len": 12,
             "out_len": 128, "batch": b, "latency_s": 1.0, "throughput_tok_s": 128.0 * b, "status": "ok",
             "device_name": "cpu", "dtype": "float16", "weights": "random"} for b in (1, 64)]
    title = "compiled backend (static cache, CUDA graphs) · NVIDIA H100 80GB HBM3 · float16 · random weights at the true shapes"
    fig = figure.draw(pd.DataFrame(rows), title)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    assert "\n" in fig._suptitle.get_text()


def test_figure_oom_notes_stay_under_their_panels():
    """Long out-of-memory lists (the 512-token panels of the real grid) wrap to their panel's
    width: each note lies inside its column, and the panels keep their width (an unwrapped
    note once made tight_layout shrink every panel to a sliver and ran into the next one)."""
    rows = []
    for fam in ("A", "B"):
        for i in (12, 82):
            for o in (128, 512):
                for m in ("dense", "depth-ppl", "flap", "llm-pruner"):
                    for b in (1, 8, 64, 128, 256, 384):
                        oom = o == 512 and b >= 128
                        rows.append({"model": fam, "family": fam, "method": m, "backend": "hf-eager",
                                     "params": 1e9, "in_len": i, "out_len": o, "batch": b,
                                     "latency_s": None if oom else 1.0 + b / 10,
                                     "throughput_tok_s": None if oom else b * o / (1.0 + b / 10),
                                     "status": "oom" if oom else "ok", "device_name": "cpu",
                                     "dtype": "float16", "weights": "random"})
    fig = figure.draw(pd.DataFrame(rows), "a title")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ncols, width = 4, fig.bbox.width
    axes = fig.get_axes()
    assert all(ax.get_position().width > 0.5 / ncols for ax in axes)
    notes = [(ax, t) for ax in axes for t in ax.texts if t.get_text().startswith("OOM")]
    assert len(notes) == 4  # the four 512-token panels
    for ax, t in notes:
        col = int(ax.get_position().x0 * ncols)
        box = t.get_window_extent(renderer)
        assert col * width / ncols - 1 <= box.x0 and box.x1 <= (col + 1) * width / ncols + 1
        assert "dense bs128, 256, 384" in t.get_text().replace("\n", " ")


def test_tied_embeddings_roundtrip(tmp_path):
    """SmolLM2-style tied embeddings: stored once, reload with ours and with stock transformers."""
    from conftest import tiny_arch, tiny_model_of
    from transformers import AutoModelForCausalLM

    m = tiny_model_of({**tiny_arch(gqa=True), "tie_word_embeddings": True})
    save_model(m, tmp_path, model_name="t", method="x", weights="safetensors")
    x = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        want = m(input_ids=x).logits
        ours = load_model(tmp_path)
        assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
        torch.testing.assert_close(ours(input_ids=x).logits, want)
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(input_ids=x).logits, want)


def test_backend_info_column(tmp_path):
    """A compiled cell's backend settings land in benchmark.csv as one JSON string."""
    p = Path(_cell(tmp_path, "dense", 1, 0.5, backend="compiled"))
    rec = json.loads(p.read_text())
    rec.update(backend_info={"inductor": {"coordinate_descent_tuning": True}, "compiled": True})
    p.write_text(json.dumps(rec))
    df = aggregate.bench_table(aggregate.read_cells([str(p), _cell(tmp_path, "depth", 1, 0.4)]), {})
    info = dict(zip(df["method"], df["backend_info"]))
    assert json.loads(info["dense"]) == {"compiled": True, "inductor": {"coordinate_descent_tuning": True}}
    assert info["depth"] == ""


def test_concurrent_writers_of_one_file_both_finish(tmp_path):
    """Two writers of one path at once (cells on several GPUs noting the same precompile
    record): neither removes the other's temporary file; the last rename wins."""
    import threading

    p, errors, written = tmp_path / "rec.json", [], threading.Event()

    def slow_writer():
        try:
            with atomic_path(p) as tmp:
                tmp.write_text('{"writer": "a"}')
                written.set()
                release.wait(10)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    release = threading.Event()
    t = threading.Thread(target=slow_writer)
    t.start()
    assert written.wait(10)
    write_json(p, {"writer": "b"})  # meanwhile: another writer of the same record
    release.set()
    t.join(10)
    assert errors == [] and read_json(p) == {"writer": "a"}
    assert [x.name for x in tmp_path.iterdir()] == ["rec.json"]


def test_only_killed_writers_temporary_files_are_removed(tmp_path):
    """A temporary file of a writer that exited (its pid in the name) goes at the next write,
    as does one without a writer's pid that is a day old; a fresh one of another host (or an
    older name) stays: its writer may still be writing."""
    import os
    import subprocess
    import sys
    import time

    from prunebench import io

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = int(gone.stdout)
    tag = io._writer_tag()
    files = {"dead": f".a.json.{dead}-{tag}.x1y2z3.tmp", "live": f".a.json.{os.getpid()}-{tag}.a1b2c3.tmp",
             "other-host": f".a.json.{dead}-{'0' * 8 if tag != '0' * 8 else '1' * 8}.q1w2e3.tmp",
             "fresh-unnamed": ".a.json.k9j8h7g6.tmp", "old-unnamed": ".a.json.m5n4b3v2.tmp",
             "other-target": ".a.json.old.r4t5y6u7.tmp"}
    for name in files.values():
        (tmp_path / name).write_text("partial")
    day_old = time.time() - io.STALE_AGE - 60
    os.utime(tmp_path / files["old-unnamed"], (day_old, day_old))
    write_json(tmp_path / "a.json", {"v": 1})
    left = {k for k, name in files.items() if (tmp_path / name).exists()}
    assert left == {"live", "other-host", "fresh-unnamed", "other-target"}


def test_manifest_of_another_format_version_refused(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path, model_name="t", method="dense", weights="safetensors")
    man = json.loads((tmp_path / "prunebench.json").read_text())
    (tmp_path / "prunebench.json").write_text(json.dumps({**man, "version": 2}))
    with pytest.raises(ArtifactError, match=r"prunebench\.json: model folder format version 2, this prunebench "
                                            r"reads version 1"):
        read_manifest(tmp_path)
    (tmp_path / "prunebench.json").write_text(json.dumps({k: v for k, v in man.items() if k != "version"}))
    with pytest.raises(ArtifactError, match="version None"):
        load_model(tmp_path)


def test_manifest_names_checked_where_asked(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path, model_name="t", method="dense", weights="safetensors")
    assert read_manifest(tmp_path, model="t", method="dense")["model"] == "t"
    with pytest.raises(ArtifactError, match=r"prunebench\.json: method is 'dense' but the name asked for is 'depth'"):
        read_manifest(tmp_path, model="t", method="depth")
    with pytest.raises(ArtifactError, match="model is 't' but the name asked for is 'other'"):
        read_manifest(tmp_path, model="other")
