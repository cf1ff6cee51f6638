"""Deterministic generated scenes: the offline benchmark and training corpus.

Data flow (one module per stage): spec (what a scene contains, sampling) → render (pixels, crops, JPEG) →
claims (caption meaning + truth checker) → captions / negatives / tasks (texts and instruction tasks) →
layouts (public file formats) → generate (the entry point, `uniretrieve scenes generate`).
"""
