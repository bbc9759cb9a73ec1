"""Start-up: what the Snakefile imports and a no-op run's validation (with the methods'
declarations the rules read) import neither torch nor transformers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT  # noqa: E402


def _py(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


HEAVY = "json.dumps({m: m in sys.modules for m in ('torch', 'transformers')})"


def test_snakefile_imports_are_light():
    # exactly what workflow/rules/common.smk imports
    got = _py(f"import json, sys; from prunebench import config, paths; from prunebench.gpus import count_without_torch; "
              f"count_without_torch(); print({HEAVY})")
    assert got == {"torch": False, "transformers": False}


def test_a_validated_config_is_not_checked_across_keys_again(tmp_path):
    stamp = tmp_path / "stamps"
    validate = ("import json, sys, yaml; from prunebench import config as c; cfg = yaml.safe_load(open('config.yaml'));"
                "{edit} n = {{}}; c.validate(cfg, check_cuda=False, stamp_dir={stamp!r}, needs=n); "
                "assert cfg['benchmark']['timing']['min_runs'] >= 1; "
                "assert n['dense'] == dict(needs_calibration=False, copies_weights=False, wants_gpu=False); "
                "print({heavy})")
    first = _py(validate.format(edit="", stamp=str(stamp), heavy=HEAVY))
    assert first["torch"]  # the cross-key checks ran: the method registry imports torch
    assert len(list(stamp.iterdir())) == 1
    again = _py(validate.format(edit="", stamp=str(stamp), heavy=HEAVY))
    assert again == {"torch": False, "transformers": False}
    # another config is checked in full again
    changed = _py(validate.format(edit="cfg['benchmark']['seed'] = 7;", stamp=str(stamp), heavy=HEAVY))
    assert changed["torch"] and len(list(stamp.iterdir())) == 2


def test_a_bad_config_leaves_no_stamp(tmp_path):
    import yaml

    from prunebench import config as c

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["methods"]["bogus"] = {"method": "no-such-method"}
    stamp = tmp_path / "stamps"
    for _ in range(2):  # refused every time, not only the first
        try:
            c.validate(cfg, check_cuda=False, stamp_dir=stamp)
        except c.ConfigError as exc:
            assert "methods.bogus.method" in str(exc)
        else:
            raise AssertionError("accepted a bad method")
    assert not stamp.exists() or not list(stamp.iterdir())


def test_a_stage_job_ends_with_its_outputs_and_log_written(tmp_path):
    """``python -m prunebench <stage>`` leaves without the interpreter's teardown: its output,
    its result line and its CPU line are all there, its exit status is the stage's."""
    (tmp_path / "a.txt").write_text("Some text.\n\nAnother document.\n")
    spec = json.dumps({"source": "files", "paths": [str(tmp_path / "a.txt")]})
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "prunebench", "corpus", f"spec={spec}",
                          f"out_text={tmp_path / 'c.txt'}", f"out_meta={tmp_path / 'c.json'}",
                          f"cache_dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Another document." in (tmp_path / "c.txt").read_text() and json.loads((tmp_path / "c.json").read_text())
    assert json.loads(run.stdout.strip().splitlines()[-1])  # the result line, flushed
    assert "s CPU in all" in run.stderr
    bad = subprocess.run([sys.executable, "-m", "prunebench", "corpus", f"spec={json.dumps({'source': 'nowhere'})}",
                          f"out_text={tmp_path / 'd.txt'}", f"out_meta={tmp_path / 'd.json'}",
                          f"cache_dir={tmp_path / 'cache'}"], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and "prunebench corpus: error" in bad.stderr and not (tmp_path / "d.txt").exists()
