"""prunebench: prune LLMs (depth, LLM-Pruner, FLAP, ...) and measure speed and quality.

Importing the package imports neither torch nor transformers (the Snakefile imports
:mod:`prunebench.config` and must start fast); :func:`load_model`, the one documented
loader, imports them when first used.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "load_model":
        from .models import load_model

        return load_model
    raise AttributeError(f"module 'prunebench' has no attribute {name!r}")
