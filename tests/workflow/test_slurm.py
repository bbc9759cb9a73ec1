"""Workflow profiles, and a tiny end-to-end run submitted to a real single-node Slurm.

The Slurm test starts slurmctld + slurmd (Debian's packages, Slurm 22.05 on Debian 12) from a
config in a temporary folder (tests/workflow/slurm/*.conf.in), with munge for authentication and two
fake GPUs (gres on /dev/null, /dev/zero); it runs the pipeline through the real profile
workflow/profiles/slurm (only partition and account replaced), then checks that every job went
through sbatch (job ids in Snakemake's log, each COMPLETED in slurmctld's job-completion log,
per-job logs in .snakemake/slurm_logs), which sbatch options each rule got, and the results.
It needs root; Slurm is installed with tests/workflow/slurm/install.sh (apt) when missing, unless
PRUNEBENCH_SLURM_INSTALL=0. Without root or apt it is skipped, never faked.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_pretrained, make_text, tiny_arch

from conftest import ROOT  # noqa: E402
PROFILES = ROOT / "workflow" / "profiles"
HARNESS = Path(__file__).resolve().parent / "slurm"
PARTITION = "pbtest"
GPU_TYPE = "fake"
DAEMONS = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged", "munge")


# --------------------------------------------------------------------------- profiles
def _parsed_args(*argv: str, cwd: Path = ROOT) -> dict:
    """Snakemake's own command-line parsing (profiles included), as the run would see it."""
    code = (
        "import json, sys\n"
        "from snakemake.cli import parse_args\n"
        "_, a = parse_args(sys.argv[1:])\n"
        "res = lambda d: {k: v.value if not callable(v.value) else 'f()' for k, v in (d or {}).items()}\n"
        "print(json.dumps({'resources': res(a.resources), 'executor': a.executor,\n"
        "  'default_resources': sorted(a.default_resources or {}),\n"
        "  'set_resources': {r: res(d) for r, d in (a.set_resources or {}).items()},\n"
        "  'set_threads': {r: v.value for r, v in (a.set_threads or {}).items()}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_profile_caps_gpu_jobs_locally():
    """Without --workflow-profile, Snakemake picks up the default profile: gpu=1 in total."""
    a = _parsed_args("-s", str(ROOT / "Snakefile"), "-n")
    # Snakemake looks for profiles/default/ next to the Snakefile or in the working directory
    # (not workflow/profiles/default/ for a Snakefile at the top): hence the link profiles/
    assert a["resources"] == {"gpu": 1}, (a, "no default profile found: is profiles -> workflow/profiles there?")
    assert a["executor"] is None


def test_slurm_profile_replaces_default():
    """--workflow-profile slurm: no global gpu cap; GPU rules get GPU-node resources."""
    a = _parsed_args("-s", str(ROOT / "Snakefile"), "-n", "--workflow-profile", str(PROFILES / "slurm"))
    assert "gpu" not in a["resources"], a
    assert a["executor"] == "slurm"
    assert {"slurm_partition", "slurm_account", "runtime", "mem_mb"} <= set(a["default_resources"])
    assert "cpus_per_task" not in a["default_resources"]  # would beat cpus_per_gpu in GPU jobs
    for rule in ("prune", "benchmark", "perplexity"):
        assert {"runtime", "mem_mb", "cpus_per_gpu"} <= set(a["set_resources"][rule]), rule
    for rule in ("corpus", "data", "source"):
        assert not {"gpu", "cpus_per_gpu", "gpu_model"} & set(a["set_resources"].get(rule, {})), rule
    # the rules, not the profile, decide whether a job needs a GPU (device, dense pruning)
    assert all("gpu" not in r for r in a["set_resources"].values())


# --------------------------------------------------------------------------- cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sh(cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False, **kw)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our child that exited) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_pidfile(pidfile: Path, timeout: float = 15.0) -> None:
    """Stop the daemon whose PID is in ``pidfile``: SIGTERM, then SIGKILL after ``timeout``."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"--- {path}: (none)"


def _ensure_slurm_installed() -> None:
    if all(shutil.which(b) for b in DAEMONS):
        return
    if os.environ.get("PRUNEBENCH_SLURM_INSTALL", "1") == "0":
        pytest.skip("Slurm is not installed (tests/workflow/slurm/install.sh) and PRUNEBENCH_SLURM_INSTALL=0")
    if not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and there is no apt-get to install it")
    r = _sh(f"sh {HARNESS / 'install.sh'}", timeout=600)
    if r.returncode != 0:
        pytest.fail(f"tests/workflow/slurm/install.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    missing = [b for b in DAEMONS if not shutil.which(b)]
    assert not missing, f"installed, yet missing: {missing}"


def _start_munge() -> Path | None:
    """Reuse a working munged, else start one as user munge; return its PID file if ours."""
    if _sh("munge -n | unmunge").returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        r = _sh(f"mungekey --create --keyfile {key} || /usr/sbin/create-munge-key -f")
        assert key.exists(), f"cannot create a munge key: {r.stderr}"
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    run = Path("/run/munge")
    run.mkdir(parents=True, exist_ok=True)
    shutil.chown(run, "munge", "munge")
    run.chmod(0o755)
    pidfile = run / "munged.pid"
    r = _sh("runuser -u munge -- /usr/sbin/munged")
    for _ in range(50):
        if _sh("munge -n | unmunge").returncode == 0:
            return pidfile
        time.sleep(0.1)
    _stop_pidfile(pidfile)
    pytest.fail(f"munged did not start: {r.stdout}{r.stderr}\n{_tail(Path('/var/log/munge/munged.log'))}")


def _render(template: Path, dest: Path, values: dict) -> None:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    assert "@" not in re.sub(r"#.*", "", text), f"unfilled placeholder in {dest}"
    dest.write_text(text)


class Cluster:
    def __init__(self, d: Path, host: str):
        self.dir, self.host = d, host
        self.conf = d / "slurm.conf"
        self.jobcomp = d / "jobcomp.log"

    def logs(self) -> str:
        return "\n".join(_tail(self.dir / f) for f in ("slurmctld.log", "slurmd.log"))


RUN_CONF = Path("/run/slurm/conf")  # where slurmd (configless) exposes its config to jobs


def _check_no_system_slurm() -> None:
    """Jobs' nested srun reads /etc/slurm/slurm.conf first, then /run/slurm/conf: both ours."""
    if Path("/etc/slurm/slurm.conf").exists():
        pytest.skip("/etc/slurm/slurm.conf exists: jobs would talk to that cluster, not the test's")
    if RUN_CONF.is_symlink() and not RUN_CONF.exists():
        RUN_CONF.unlink()  # dangling link of an earlier test cluster
    if RUN_CONF.exists() or RUN_CONF.is_symlink():
        pytest.skip(f"{RUN_CONF} exists: another slurmd runs configless on this machine")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("Slurm test cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("starting a Slurm test cluster needs root")
    _ensure_slurm_installed()
    _check_no_system_slurm()
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    ctld_port = _free_port()
    values = {"DIR": d, "HOST": host, "CTLD_PORT": ctld_port, "SLURMD_PORT": _free_port(),
              "CPUS": 32, "MEM_MB": 256000, "GPU_TYPE": GPU_TYPE, "PARTITION": PARTITION}
    _render(HARNESS / "slurm.conf.in", d / "slurm.conf", values)
    _render(HARNESS / "gres.conf.in", d / "gres.conf", values)
    cluster = Cluster(d, host)

    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # clients: sbatch, squeue, scontrol
    run_slurm_existed = RUN_CONF.parent.exists()
    munge_pid = _start_munge()
    try:
        r = _sh(f"slurmctld -f {cluster.conf}")
        assert r.returncode == 0, f"slurmctld failed: {r.stderr}\n{cluster.logs()}"
        r = _sh(f"slurmd --conf-server 127.0.0.1:{ctld_port} -N {host}",
                env={k: v for k, v in os.environ.items() if k != "SLURM_CONF"})
        assert r.returncode == 0, f"slurmd failed: {r.stderr}\n{cluster.logs()}"
        state = ""
        for _ in range(120):
            state = _sh(f"sinfo -h -n {host} -o %T").stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        assert state == "idle", (f"node not idle: {state!r}\n{_sh('sinfo -R').stdout}\n"
                                 f"{cluster.logs()}")
        assert RUN_CONF.resolve().is_relative_to(d.resolve()), RUN_CONF.resolve()
        yield cluster
    finally:
        _sh(f"scancel --partition {PARTITION}")
        time.sleep(1)
        for daemon in ("slurmd", "slurmctld"):
            _stop_pidfile(d / f"{daemon}.pid")
        if munge_pid is not None:
            _stop_pidfile(munge_pid)
        if RUN_CONF.is_symlink() and Path(os.readlink(RUN_CONF)).resolve().is_relative_to(d.resolve()):
            RUN_CONF.unlink()
            if not run_slurm_existed:
                try:
                    RUN_CONF.parent.rmdir()
                except OSError:
                    pass
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf


@pytest.mark.network
def test_cluster_runs_a_gpu_job(slurm_cluster, tmp_path):
    """The harness itself: a job asking for a (fake) GPU gets one."""
    r = _sh(f"sbatch --parsable --wait -p {PARTITION} --gpus={GPU_TYPE}:1 -o {tmp_path}/o.txt "
            "--wrap 'echo gpus=$CUDA_VISIBLE_DEVICES'", timeout=60)
    assert r.returncode == 0, r.stderr + slurm_cluster.logs()
    assert (tmp_path / "o.txt").read_text().strip() == "gpus=0"


# --------------------------------------------------------------------------- end to end
def _slurm_profile(dest: Path) -> Path:
    """The real Slurm profile with only the user-edited values replaced."""
    prof = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    dr = prof["default-resources"]
    dr["slurm_partition"] = PARTITION
    dr.pop("slurm_account")  # no slurmdbd: no accounts (the plugin then submits without -A)
    prof["set-resources"]["benchmark"]["gpu_model"] = GPU_TYPE  # the optional knob, exercised
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dest


CONFIG = """
experiment: tiny
models:
  tiny: {family: Tiny, weights: pretrained, path: %(tiny)s, budget: {ratio: 0.25}}
methods:
  dense: {method: dense}
  depth-ppl: {method: depth, criterion: ppl}
corpora:
  text: {source: files, paths: [%(corpus)s]}
calibration: {corpus: text, n_samples: 4, seq_len: 32}
perplexity: {corpus: text, seq_len: 32, max_windows: 8, device: cpu}
pruning: {device: auto}
benchmark: {input_lengths: [4], output_lengths: [5], batch_sizes: [2], dtype: float32, device: auto,
            timing: {min_runs: 2, max_runs: 2, profile_tokens: 0}}
"""
# Remote jobs (kept few: each costs two Snakemake start-ups besides its own work): corpus,
# source, data x2 (calibration, eval), prune x2 (dense: no GPU; depth-ppl: GPU, device auto),
# perplexity x2 (device cpu: no GPU), benchmark x2 (GPU, device auto).
EXPECTED = {"corpus": 1, "source": 1, "data": 2, "prune": 2, "perplexity": 2, "benchmark": 2}


@pytest.mark.network
@pytest.mark.workflow
@pytest.mark.slow
def test_pipeline_on_slurm(slurm_cluster, tmp_path):
    text = make_text()
    make_pretrained(tmp_path / "tiny", tiny_arch(layers=4), text)
    (tmp_path / "corpus.txt").write_text(text)
    (tmp_path / "cfg.yaml").write_text(CONFIG % {"tiny": tmp_path / "tiny", "corpus": tmp_path / "corpus.txt"})
    profile = _slurm_profile(tmp_path / "profile")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(tmp_path / "cfg.yaml"), "--replace-workflow-config",
           "--workflow-profile", str(profile), "--verbose",
           # no slurmdbd here: sacct cannot answer, squeue does (MinJobAge=600 in slurm.conf)
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
           "--slurm-keep-successful-logs"]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420,
                       check=False)
    log = r.stdout + r.stderr
    (tmp_path / "snakemake.out").write_text(log)
    print(f"snakemake on slurm: {time.time() - t0:.0f} s")
    assert r.returncode == 0, (log[-6000:] + "\n" + slurm_cluster.logs() + "\nJob logs: "
                               f"{tmp_path}/.snakemake/slurm_logs (GPU jobs with gpu=0 and gpu_model fail in "
                               "srun: 'Step requested GRES but job doesn't have GRES')")

    # every remote job went through sbatch and completed in Slurm
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log)
    by_rule: dict[str, list[str]] = {}
    for jobid, path in submitted:
        rule = re.search(r"slurm_logs/rule_([a-z]+)/", path).group(1)
        by_rule.setdefault(rule, []).append(jobid)
        assert Path(path).is_file(), path  # the job's Slurm log (kept: --slurm-keep-successful-logs)
    assert {k: len(v) for k, v in by_rule.items()} == EXPECTED, by_rule
    done = dict(re.findall(r"JobId=(\d+) .*?JobState=(\S+)", slurm_cluster.jobcomp.read_text()))
    assert all(done.get(j) == "COMPLETED" for j, _ in submitted), (submitted, done)
    for local in ("aggregate", "figure", "frontier", "all"):
        assert re.search(rf"localrule {local}:", log), local

    # sbatch options per rule: GPU rules ask for a GPU (device auto on a cluster), CPU rules don't
    calls: dict[str, dict[str, str]] = {}  # rule -> wildcards -> sbatch call
    for call in re.findall(r"sbatch call: (sbatch .*?) --wrap=", log):
        rule, _, wildcards = re.search(r"--comment '?rule_(\S+?)'?(?: |$)", call).group(1).partition("_wildcards_")
        calls.setdefault(rule, {})[wildcards] = call
    assert {k: len(v) for k, v in calls.items()} == EXPECTED, calls
    for call in (c for cs in calls.values() for c in cs.values()):
        assert f"-p {PARTITION}" in call and " -A " not in call, call
    for call in calls["benchmark"].values():
        for opt in (f"--gpus={GPU_TYPE}:1", "--cpus-per-gpu=8", "-t 120", "--mem 64000"):
            assert opt in call, (opt, call)
    for opt in ("--gpus=1", "--cpus-per-gpu=8", "-t 240", "--mem 128000"):
        assert opt in calls["prune"]["tiny_depth-ppl"], (opt, calls["prune"])
    # dense pruning has gpu=0: no GPU, CPUs from set-threads
    assert "--gpus" not in calls["prune"]["tiny_dense"] and "--cpus-per-task=8" in calls["prune"]["tiny_dense"]
    for rule, cpus in (("corpus", 2), ("data", 4), ("source", 4), ("perplexity", 8)):
        for call in calls[rule].values():
            assert "--gpus=" not in call and f"--cpus-per-task={cpus}" in call, call
    # no global gpu cap (the default profile's) in this run: Slurm alone hands out GPUs
    assert not re.search(r"Provided resources:.*\bgpu=", log), "a global gpu cap leaked into the Slurm run"
    assert not re.search(r"Resources before job selection:.*'gpu'", log), "a global gpu cap leaked"

    # results
    cells = sorted((tmp_path / "results" / "tiny" / "bench").rglob("*.json"))
    assert len(cells) == 2
    for cell in cells:
        rec = json.loads(cell.read_text())
        assert rec["status"] == "ok", rec
    with open(tmp_path / "results" / "tiny" / "tables" / "benchmark.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    with open(tmp_path / "results" / "tiny" / "tables" / "quality.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert (tmp_path / "results" / "tiny" / "figures" / "throughput_latency.png").stat().st_size > 0
