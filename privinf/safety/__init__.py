"""The safety harness: datasets, batched resumable generation, judges, metrics, sweeps and MVA search.

Modules (``judges``, ``stats``, ``config`` and ``reports`` are light; ``data`` (through
``privinf.models``), ``generate`` and ``runner`` import torch):

- ``data``: HarmBench / Do-Not-Answer / MT-Bench+Vicuna prompts and Wikipedia text from packages,
  user prompt files, the train/eval overlap guard.
- ``judges``: the GCG refusal-keyword judge, degenerate-response detection, model-based judges.
- ``stats``: Wilson intervals, bootstrap intervals, paired comparison (flips, McNemar).
- ``config``: the frozen ``RunConfig`` that keys every generation, and ``perturbation()``.
- ``generate``: batched greedy generation with left padding into a JSONL results store.
- ``runner``: evaluation of one configuration, sweeps, per-layer sweeps, MVA search.
- ``reports``: JSON, Markdown and PNG outputs.
"""
