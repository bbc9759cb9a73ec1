"""The ``prunebench`` command.

For users (run from the checkout, e.g. ``.venv/bin/prunebench run demo``):

  run NAME [--random-weights] [snakemake args]   run an experiment (config.yaml = paper, or
                                                 workflow/presets/NAME.yaml)
  cell FILE... [snakemake args]                  redo benchmark cells (results/<experiment>/bench/...)
  report NAME [snakemake args]                   results/NAME/report.html
  cells [NAME] [filters] [--estimate DIR]        list (and estimate) an experiment's cells
  reproduction-report RESULTS OUT                a report folder from a results folder
  bundle --target-freeze FILE                    wheels for an offline node, minus what it has
  costs NAME [--jobs]                            what each stage's jobs cost (wall and CPU seconds)

For the workflow's rules: ``prunebench <stage> key=value ...`` runs one stage
(``prunebench <stage> --help`` is not offered: the keys are the stage's ``run`` arguments).

Each command's own options: ``prunebench <command> --help``.
"""
from __future__ import annotations

import importlib
import os
import sys

from .stages import STAGES

#: user command -> module of this package with a ``main(argv) -> int``
COMMANDS = {"run": "workflow", "cell": "workflow", "report": "workflow",
            "cells": "cells", "reproduction-report": "reproduction", "bundle": "bundle",
            "costs": "costs"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("stages:", ", ".join(STAGES))
        return 0
    name, rest = argv[0], argv[1:]
    if name in COMMANDS:
        try:
            return importlib.import_module(f".{COMMANDS[name]}", __name__).main([name, *rest])
        except BrokenPipeError:  # e.g. `prunebench cells | head`: the reader stopped
            sys.stdout = open(os.devnull, "w")
            return 0
    if name in STAGES:
        from . import stages

        return stages.main(name, rest)
    print(f"prunebench: unknown command {name!r}; expected one of {[*COMMANDS, *STAGES]}", file=sys.stderr)
    return 2
