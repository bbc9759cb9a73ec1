"""The stage commands: ``python -m prunebench <stage> key=value ...`` calls ``prunebench.<stage>.run``.

Each ``key=value`` becomes a keyword argument of the stage's ``run`` function: values of
parameters annotated ``str`` (or ``str | None``) are passed as text, all others are parsed as JSON (numbers,
lists, objects, ``null``).  The Snakemake rules call exactly this, so every step can also be
run by hand.  Known failures (bad artifact, bad setting, a corpus that cannot be built) print one line naming the file or
the config key and exit with status 1; anything else keeps its traceback.
"""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import sys
import time

STAGES = ("corpus", "data", "source", "prune", "perplexity", "benchmark", "aggregate", "figure", "frontier")


#: the end of a job's log line that gives its CPU seconds (read back by ``prunebench costs``)
CPU_LINE = re.compile(r"(?P<cpu>[0-9]+(?:\.[0-9]+)?) s CPU in all \(this process")


def cpu_line() -> str:
    """The process's CPU seconds so far, start-up included (user + system, its children
    too): a job's exact CPU time when logged at its end (Snakemake's benchmark file samples
    the job's processes, every second at first, then every 30 s, and misses what ran after
    the last sample)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return f"{cpu:.1f} s CPU in all (this process from its start, user + system)"


def parse_kwargs(fn, items: list[str]) -> dict:
    sig = inspect.signature(fn)
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"argument {item!r}: expected key=value")
        key, value = item.split("=", 1)
        if key not in sig.parameters:
            raise SystemExit(f"argument {key!r}: {fn.__module__}.run takes {list(sig.parameters)}")
        ann = sig.parameters[key].annotation
        if ann in ("str", str, "str | None", "None | str", "Optional[str]"):
            out[key] = value
        else:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                raise SystemExit(f"argument {key}: not valid JSON: {value!r}") from None
    return out


def main(stage: str, rest: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from ..config import ConfigError
    from ..corpus import CorpusError
    from ..devices import process_age
    from ..io import ArtifactError

    mod = importlib.import_module(f"prunebench.{stage}")
    kwargs = parse_kwargs(mod.run, rest)
    age = process_age()
    if age is not None:  # interpreter start + imports: a per-job cost worth knowing on a GPU
        logging.getLogger("prunebench").info("%s: started %.1f s after the process", stage, age)
    t0 = time.perf_counter()
    try:
        result = mod.run(**kwargs)
    except (ArtifactError, ConfigError, CorpusError) as exc:
        print(f"prunebench {stage}: error: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("prunebench").info("%s done in %.1f s, %s", stage, time.perf_counter() - t0, cpu_line())
    if isinstance(result, dict):
        print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}, default=str))
    return 0
