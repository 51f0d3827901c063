"""Evaluations of CLIP models that need no training labels: zero-shot classification."""
