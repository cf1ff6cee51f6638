"""The built-in `unime-tiny` and its recipe: the tiny LLaVA base, generative pretraining, the CLIP-style baseline,
the recipe that chains them with the UniME stages, the model card and the paper's ablation.

Installed as `uniretrieve.tiny`. Imports `uniretrieve` and `uniretrieve.train`, never the reverse.
"""
