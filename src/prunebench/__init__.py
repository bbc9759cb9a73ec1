"""prunebench: prune LLMs (depth, LLM-Pruner, FLAP) and measure speed and quality."""

__version__ = "0.1.0"

from .models import load_model  # noqa: E402,F401  (the one documented loader)
