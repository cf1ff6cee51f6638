"""UniME training: stage 1 (textual knowledge distillation) and stage 2 (hard-negative instruction tuning).

Installed as `uniretrieve.train`. Imports `uniretrieve`, never the reverse.
"""
