"""Fault injection for ``test_faults.py``: on ``PYTHONPATH`` only in that test's runs.

With ``PRUNEBENCH_FAULT_INJECT=<text>`` every Python process of the run (Snakemake and its
jobs) replaces ``os.replace`` by one that SIGKILLs the process group (the job and the
Snakemake that started it, as when a node dies) when the destination contains ``<text>``:
right after an artifact's temporary file is complete and before it is renamed into place
(``prunebench.io.atomic_path``).  The product itself carries no such hook.
"""
import os

_NEEDLE = os.environ.get("PRUNEBENCH_FAULT_INJECT")
if _NEEDLE:
    import signal

    _replace = os.replace

    def _replace_or_die(src, dst, *args, **kwargs):
        if _NEEDLE in os.fspath(dst):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)

    os.replace = _replace_or_die
