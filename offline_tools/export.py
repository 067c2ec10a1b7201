"""Export a trained learner into a folder of its own, optionally with bf16 LoRA weights (half the bytes).

    regrad export --checkpoint run/best --output checkpoints/my-learner --weights-dtype bfloat16
    regrad export --checkpoint run-a/best --checkpoint run-b/best --output checkpoints/my-soup

The exported learner is loaded, rounded (bf16) and saved with the fingerprint of the rounded
weights, so a gradient store must be encoded with the exported learner, not the run's. The run's
record (training_log.jsonl, gzipped; training_curves.png, as a palette PNG; summary.json; train_args.json;
found beside the checkpoint folder) is copied along when present. A run warm-started from another learner
(`regrad train --init-from`) also gets `init.json` (that learner's path and fingerprint) and that
learner's own record under `init/` (a shipped folder's `runs/` and `soup.json` included): the
exported folder keeps the whole lineage.

With several checkpoints (one preset, one base model) the export is their uniform average, a model
soup (`Learner.load_average`): each run's record goes to `runs/<i>/` in the order given, and
`soup.json` names the averaged checkpoints and their fingerprints.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["INIT_JSON", "LOG_GZ", "RUN_RECORD", "SOUP_JSON", "export_learner"]

RUN_RECORD = ("training_log.jsonl", "training_curves.png", "summary.json", "train_args.json")
LOG = "training_log.jsonl"
LOG_GZ = LOG + ".gz"   # exported logs are gzipped: 5x smaller, and a shipped folder must stay under 5 MB
SOUP_JSON = "soup.json"
INIT_JSON = "init.json"
_RECORD_FILES = {*RUN_RECORD, LOG_GZ, SOUP_JSON, INIT_JSON}  # what an exported folder's record is made of


def _copy(source: Path, target: Path) -> str:
    """Copy one record file; a training log is written gzipped (reproducibly: no name or time in the header)
    and a plot as a palette PNG (`compact_png`: what a run wrote before plots were compact shrinks too)."""
    from offline_tools.plots import compact_png

    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".png":
        compact_png(source, target)
        return target.name
    if source.name != LOG:
        shutil.copyfile(source, target)
        return target.name
    with source.open("rb") as raw, gzip.GzipFile(target.with_name(LOG_GZ), "wb", mtime=0) as packed:
        shutil.copyfileobj(raw, packed)
    return LOG_GZ


def _copy_record(checkpoint: Path, folder: Path) -> list[str]:
    """The run's record found beside `checkpoint` (its best/), into `folder`; and, for a warm-started run
    (`regrad train --init-from`), the starting learner's fingerprint (`init.json`) and record (`init/`)."""
    copied = [_copy(checkpoint.parent / name, folder / name) for name in RUN_RECORD
              if (checkpoint.parent / name).is_file()]
    train_args = checkpoint.parent / "train_args.json"
    init = json.loads(train_args.read_text()).get("init_from") if train_args.is_file() else None
    if init and (Path(init) / "learner.json").is_file():
        copied += _copy_init(Path(init), folder)
    return copied


def _copy_init(init: Path, folder: Path) -> list[str]:
    from models import Learner
    from offline_tools.files import atomic_text

    with atomic_text(folder / INIT_JSON) as f:
        json.dump({"init_from": str(init), "fingerprint": Learner.read_meta(init)["fingerprint"],
                   "record": "init"}, f, indent=2)
    if not any((init / name).is_file() for name in _RECORD_FILES):
        _copy_record(init, folder / "init")   # a run's best/: its record is beside it
    else:                                      # an exported folder: its record is inside it, runs/ included
        for path in sorted(p for p in init.rglob("*") if p.is_file() and p.name in _RECORD_FILES):
            _copy(path, folder / "init" / path.relative_to(init))
    return [INIT_JSON, "init/"]


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
        # A source with no record beside it that another source started from (its --init-from, e.g. the
        # average of run 3 and the learner run 3 was warm-started from): its record is that init/ one.
        inits = {json.loads(p.read_text())["fingerprint"]: p.parent.relative_to(output).as_posix() + "/init"
                 for p in sorted(output.glob(f"runs/*/{INIT_JSON}"))}
        for entry in averaged:
            if not entry["copied"] and entry["fingerprint"] in inits:
                entry["record"] = inits[entry["fingerprint"]]
        with atomic_text(output / SOUP_JSON) as f:
            json.dump({"average": "uniform, elementwise over LoRA A, LoRA B and step sizes",
                       "fingerprint": learner.fingerprint, "weights_dtype": weights_dtype, "checkpoints": averaged},
                      f, indent=2)
        report["averaged"] = averaged
    report["bytes"] = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    return report
