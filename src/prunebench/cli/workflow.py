"""``prunebench run | cell | report``: Snakemake on one experiment, with its config files.

An experiment is ``config.yaml`` (``paper``) or a preset ``workflow/presets/<name>.yaml``
whose ``experiment`` key is its file name.  A complete preset (every top-level key the
schema requires) replaces config.yaml (``--replace-workflow-config``); any other preset is
merged over it.  ``--random-weights`` picks ``<name>-random``.  ``--configfile FILE...``
among the Snakemake arguments adds files merged over the experiment's.  Snakemake runs in
the checkout (the folder with the Snakefile: the current one if it has one, else the one
this package is installed from); the command it runs is printed first.

    prunebench run demo                      # the demo; -n: only say what would run
    prunebench run paper --random-weights    # workflow/presets/paper-random.yaml over config.yaml
    prunebench cell results/demo/bench/smollm2-135m/flap/hf-eager/in82_out16_bs4.json
    prunebench report demo                   # results/demo/report.html
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import config as pbconfig
from .. import paths

PRESETS = "workflow/presets"
DEFAULT_CONFIG = "config.yaml"
#: Snakemake options that set the number of cores (or a profile that does)
CORES_FLAGS = ("-c", "--cores", "-j", "--jobs", "--workflow-profile", "--profile")
#: output folders of the layout before experiments (results/<folder> instead of results/<experiment>/<folder>)
OLD_LAYOUT = ("bench", "tables", "figures", "models", "prune", "perplexity", "data", "corpora", "logs")


class UsageError(Exception):
    """A command line or checkout the front door cannot run."""


@dataclass(frozen=True)
class Experiment:
    name: str
    files: tuple[str, ...]  # config files given to Snakemake, relative to the checkout
    replace: bool           # True: they replace config.yaml


def checkout() -> Path:
    """The prunebench checkout to run in: the current folder, else the package's own."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / "Snakefile").is_file() and (root / PRESETS).is_dir():
            return root
    raise UsageError("no prunebench checkout here: run prunebench from the folder with the Snakefile")


def _yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def experiments(root: Path) -> dict[str, Experiment]:
    """Every experiment of the checkout: config.yaml's and one per preset."""
    required = set(_yaml(Path(pbconfig.SCHEMA)).get("required", []))
    default = _yaml(root / DEFAULT_CONFIG).get("experiment", "paper")
    out = {default: Experiment(default, (), False)}
    for f in sorted((root / PRESETS).glob("*.yaml")):
        out[f.stem] = Experiment(f.stem, (f"{PRESETS}/{f.name}",), required <= set(_yaml(f)))
    return out


def resolve(root: Path, name: str, random_weights: bool = False) -> Experiment:
    known = experiments(root)
    want = f"{name}-random" if random_weights else name
    if want not in known:
        hint = f" (--random-weights: {PRESETS}/{want}.yaml)" if random_weights else ""
        raise UsageError(f"no experiment {want!r}{hint}; known: {', '.join(known)}")
    return known[want]


def load_config(root: Path, exp: Experiment, extra: list[str] = ()) -> dict:
    """The experiment's config as Snakemake merges it, the schema's defaults filled in
    (not checked across keys: the workflow does that)."""
    cfg = {} if exp.replace else _yaml(root / DEFAULT_CONFIG)
    for f in (*exp.files, *extra):
        pbconfig.merge(cfg, _yaml(root / f))
    pbconfig.schema_problems(cfg)  # fills the defaults
    return cfg


def split_configfiles(args: list[str]) -> tuple[list[str], list[str]]:
    """``(args without --configfile FILE..., those files)``."""
    rest, files, i = [], [], 0
    while i < len(args):
        if args[i] in ("--configfile", "--configfiles"):
            i += 1
            while i < len(args) and not args[i].startswith("-"):
                files.append(args[i])
                i += 1
        else:
            rest.append(args[i])
            i += 1
    return rest, files


def snakemake_command(exp: Experiment, args: list[str], front: list[str] = ()) -> list[str]:
    """``python -m snakemake FRONT ARGS --configfile ...``: targets (``front``) first and the
    config files last -- ``--configfile`` takes every plain word after it as a file."""
    args, extra = split_configfiles(list(args))
    cmd = [sys.executable, "-m", "snakemake", *front, *args]
    if not any(a.split("=")[0] in CORES_FLAGS or re.fullmatch(r"-[cj]\d+", a) for a in args):
        cmd += ["--cores", "all"]
    files = [*exp.files, *extra]
    if files:
        cmd += ["--configfile", *files]
    if exp.replace:
        cmd.append("--replace-workflow-config")
    return cmd


def _old_layout(root: Path) -> list[str]:
    return [f"results/{d}" for d in OLD_LAYOUT if (root / "results" / d).is_dir()]


def execute(root: Path, cmd: list[str]) -> int:
    shown = ["snakemake", *cmd[3:]] if cmd[1:3] == ["-m", "snakemake"] else cmd
    print("prunebench: " + shlex.join(shown), file=sys.stderr, flush=True)
    old = _old_layout(root)
    if old:
        print(f"prunebench: note: {', '.join(old)} hold outputs of the layout before experiments "
              "(now results/<experiment>/...): move them there or delete them", file=sys.stderr)
    try:
        return subprocess.call(cmd, cwd=root)
    except KeyboardInterrupt:
        return 130


def _name(cmd: str, rest: list[str]) -> tuple[str, list[str]]:
    if not rest or rest[0].startswith("-"):
        raise UsageError(f"usage: prunebench {cmd} NAME [snakemake args]  (NAME first)")
    return rest[0], rest[1:]


def run(rest: list[str]) -> int:
    random_weights = "--random-weights" in rest
    name, args = _name("run", [a for a in rest if a != "--random-weights"])
    root = checkout()
    exp = resolve(root, name, random_weights)
    rc = execute(root, snakemake_command(exp, args))
    if rc == 0 and not {"-n", "--dry-run", "--dryrun"} & set(args):
        print(f"prunebench: experiment {exp.name}: outputs in {root / paths.experiment_dir(exp.name)}")
    return rc


def _relative(root: Path, file: str) -> str:
    p = Path(file)
    p = p.resolve() if p.is_absolute() else (Path.cwd() / p).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"{file}: not inside the checkout {root}") from None


def cell(rest: list[str]) -> int:
    """Redo the given cells (Snakemake ``--force`` on them, nothing else); the tables and
    the figure follow with the next ``prunebench run <experiment>``."""
    files = []
    while rest and not rest[0].startswith("-"):
        files.append(rest.pop(0))
    if not files:
        raise UsageError("usage: prunebench cell FILE... [snakemake args]  (cell files: results/<experiment>/bench/...)")
    root = checkout()
    targets = [_relative(root, f) for f in files]
    try:
        names = {paths.experiment_of(t) for t in targets}
    except paths.PathError as exc:
        raise UsageError(str(exc)) from None
    if len(names) > 1:
        raise UsageError(f"cells of several experiments ({', '.join(sorted(names))}): one at a time")
    exp = resolve(root, names.pop())
    args, extra = split_configfiles(rest)
    grid = [paths.cell_path(paths.experiment_dir(exp.name), c) for c in pbconfig.cells(load_config(root, exp, extra))]
    outside = [t for t in targets if t not in grid]
    if outside:
        raise UsageError(f"{outside[0]}: not a cell of experiment {exp.name} "
                         f"(`prunebench cells {exp.name}` lists them)")
    rc = execute(root, snakemake_command(exp, rest, front=[*targets, "--force"]))
    if rc == 0 and not {"-n", "--dry-run", "--dryrun"} & set(args):
        print(f"prunebench: tables and figure: prunebench run {exp.name}")
    return rc


def report(rest: list[str]) -> int:
    name, args = _name("report", rest)
    root = checkout()
    exp = resolve(root, name)
    out = f"{paths.experiment_dir(exp.name)}/report.html"
    rc = execute(root, snakemake_command(exp, args, front=["--report", out]))
    if rc == 0:
        print(f"prunebench: report: {root / out}")
    return rc


def main(argv: list[str]) -> int:
    cmd, rest = argv[0], list(argv[1:])
    if rest[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    try:
        return {"run": run, "cell": cell, "report": report}[cmd](rest)
    except UsageError as exc:
        print(f"prunebench {cmd}: {exc}", file=sys.stderr)
        return 2
