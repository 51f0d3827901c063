"""Evaluations of CLIP models: zero-shot classification, image-text retrieval and linear probes
(`zero_shot.py`, `retrieval.py`, `linear_probe.py`), and the trainer's evaluators that run them
on datasets at set intervals (`evaluators.py`)."""
