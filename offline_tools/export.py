"""Export a trained learner into a folder of its own, optionally with bf16 LoRA weights (half the bytes).

    regrad export --checkpoint run/best --output checkpoints/my-learner --weights-dtype bfloat16
    regrad export --checkpoint run-a/best --checkpoint run-b/best --output checkpoints/my-soup

The exported learner is loaded, rounded (bf16) and saved with the fingerprint of the rounded
weights, so a gradient store must be encoded with the exported learner, not the run's. The run's
record (training_log.jsonl, training_curves.png, summary.json, train_args.json, found beside the
checkpoint folder) is copied along when present.

With several checkpoints (one preset, one base model) the export is their uniform average, a model
soup (`Learner.load_average`): each run's record goes to `runs/<i>/` in the order given, and
`soup.json` names the averaged checkpoints and their fingerprints.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RUN_RECORD", "SOUP_JSON", "export_learner"]

RUN_RECORD = ("training_log.jsonl", "training_curves.png", "summary.json", "train_args.json")
SOUP_JSON = "soup.json"


def _copy_record(checkpoint: Path, folder: Path) -> list[str]:
    copied = []
    for name in RUN_RECORD:
        source = checkpoint.parent / name
        if source.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / name)
            copied.append(name)
    return copied


def export_learner(checkpoint: str | os.PathLike | Sequence[str | os.PathLike], output: str | os.PathLike,
                   weights_dtype: str = "bfloat16") -> dict:
    """Load `checkpoint` (several: their average), save it to `output` with LoRA weights in `weights_dtype`.

    Returns a report: the output, its fingerprint, the source fingerprint(s), its size, the record copied.
    """
    from models import Learner, ModelError
    from offline_tools.files import atomic_text

    sources = [Path(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else [Path(c) for c in checkpoint]
    output = Path(output)
    for source in sources:
        if output.resolve() == source.resolve():
            raise ModelError(f"--output {output} is the checkpoint folder {source} itself; export into a new folder")
    learner = Learner.load_average(sources)   # one checkpoint: `load`; each one's fingerprint is checked
    source_fingerprints = [Learner.read_meta(s)["fingerprint"] for s in sources]
    learner.save(output, weights_dtype=weights_dtype)
    report = {"output": str(output), "weights_dtype": weights_dtype, "fingerprint": learner.fingerprint}
    if len(sources) == 1:
        report |= {"source_fingerprint": source_fingerprints[0], "copied": _copy_record(sources[0], output)}
    else:
        averaged = [{"checkpoint": str(s), "fingerprint": f, "record": f"runs/{i}",
                     "copied": _copy_record(s, output / "runs" / str(i))}
                    for i, (s, f) in enumerate(zip(sources, source_fingerprints), start=1)]
        with atomic_text(output / SOUP_JSON) as f:
            json.dump({"average": "uniform, elementwise over LoRA A, LoRA B and step sizes",
                       "fingerprint": learner.fingerprint, "weights_dtype": weights_dtype, "checkpoints": averaged},
                      f, indent=2)
        report["averaged"] = averaged
    report["bytes"] = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    return report
