"""The offline side of regrad, behind the `regrad` commands (cli/): datasets, the synthetic benchmarks,
augment, recipes, meta-training, export, encode and evaluation."""

__all__: list[str] = []
