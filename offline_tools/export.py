"""Export a trained learner into a folder of its own, optionally with bf16 LoRA weights (half the bytes).

    regrad export --checkpoint run/best --output checkpoints/my-learner --weights-dtype bfloat16

The exported learner is loaded, rounded (bf16) and saved with the fingerprint of the rounded
weights, so a gradient store must be encoded with the exported learner, not the run's. The run's
record (training_log.jsonl, training_curves.png, summary.json, train_args.json, found beside the
checkpoint folder) is copied along when present.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["RUN_RECORD", "export_learner"]

RUN_RECORD = ("training_log.jsonl", "training_curves.png", "summary.json", "train_args.json")


def export_learner(checkpoint: str | os.PathLike, output: str | os.PathLike, weights_dtype: str = "bfloat16") -> dict:
    """Load `checkpoint`, save it to `output` with LoRA weights in `weights_dtype`; returns a report."""
    from models import Learner, ModelError

    checkpoint, output = Path(checkpoint), Path(output)
    if output.resolve() == checkpoint.resolve():
        raise ModelError(f"--output {output} is the checkpoint folder itself; export into a new folder")
    learner = Learner.load(checkpoint)
    before = learner.fingerprint
    learner.save(output, weights_dtype=weights_dtype)
    copied = []
    for name in RUN_RECORD:
        source = checkpoint.parent / name
        if source.is_file():
            shutil.copyfile(source, output / name)
            copied.append(name)
    return {
        "output": str(output), "weights_dtype": weights_dtype,
        "fingerprint": learner.fingerprint, "source_fingerprint": before,
        "bytes": sum(p.stat().st_size for p in output.iterdir() if p.is_file()), "copied": copied,
    }
