"""The offline side of regrad, behind the `regrad` commands (cli/), in rooms:

    datasets/     QA dataset loaders, one record type, and augmenting questions with retrieved passages
    benchmarks/   the synthetic benchmarks (invented people; composition and novel relations)
    training/     meta-training, recipes, export and averaging, training curves
    encoding/     per-passage gradients into a gradient store (one process or Ray)
    evaluation/   metrics, batch evaluation, score files
    errors.py     the CLI-facing errors and exit statuses; files.py: atomic file writes
"""

__all__: list[str] = []
