"""Models: loading a weight source, the model folder the pipeline writes, layer surgery.

``folder``     the model folder format (``results/<experiment>/models/<model>/<method>/``):
               :func:`save_model`, :func:`save_reference`, :func:`read_manifest`,
               :func:`weights_kind` and :func:`load_model`, the one documented loader;
``sources``    :func:`load_source`: a ``models.<name>`` entry's pretrained, GGUF or random weights;
``build``      :func:`build_random`: a model of a config's shapes with seeded random weights
               (or the structure alone, on the meta device), and what loading needs besides
               the weights (buffers, a config without its quantizer);
``structure``  :func:`count_params`, the per-layer widths (:func:`layer_structure`,
               :func:`apply_structure`) and the bookkeeping after surgery
               (:func:`set_kv_groups`, :func:`renumber_layers`).

Elsewhere: dtype and device names (:mod:`prunebench.devices`), ``pkg:`` paths
(:func:`prunebench.pkgdata.resolve_path`), architectures and their parameter arithmetic
(:mod:`prunebench.architecture`).
"""
from __future__ import annotations

from .build import build_random  # noqa: F401
from .folder import FORMAT, MANIFEST, VERSION, load_model, read_manifest, save_model, save_reference, weights_kind  # noqa: F401
from .sources import load_source  # noqa: F401
from .structure import (apply_structure, count_params, is_uniform, layer_structure, renumber_layers,  # noqa: F401
                        set_kv_groups)
