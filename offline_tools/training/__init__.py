"""Meta-training and what comes of it: the meta-objective (meta.py), the training loop (train.py),
recipes that build a shipped learner (recipe.py), exporting and averaging learners (export.py) and the
training curves (plots.py). `regrad train` and `regrad export` run them."""
