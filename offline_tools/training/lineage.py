"""A learner's lineage, flat: `lineage.json` lists every run, warm start and average that made it, and each
run's record (log, curves, summary, arguments) sits beside the others in `runs/<fingerprint[:12]>/`.

    {"learner": "<fingerprint>",
     "steps": [
       {"kind": "run", "fingerprint": F1, "record": "runs/<F1[:12]>", "init_from": null},
       {"kind": "run", "fingerprint": F2, "record": "runs/<F2[:12]>", "init_from": null},
       {"kind": "average", "fingerprint": F3, "of": [F1, F2], "weights_dtype": "bfloat16"},
       {"kind": "run", "fingerprint": F4, "record": "runs/<F4[:12]>", "init_from": F3},
       {"kind": "export", "fingerprint": F5, "of": [F4], "weights_dtype": "bfloat16"}]}

Steps come in the order they were made (a step names only fingerprints listed before it), each fingerprint
once. `regrad export` writes it: a source that is a run's `best/` adds a `run` step (and, when the run was
warm-started, its starting learner's lineage first); a source that is an exported folder brings its own
lineage; the export itself is the last step, an `average` of several sources or an `export` of one (with
`"composition": SPEC` when `regrad export --composition` set the learner's served default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["LINEAGE_JSON", "RUNS", "Lineage", "collect"]

LINEAGE_JSON = "lineage.json"
RUNS = "runs"


class Lineage:
    """Steps in order, each fingerprint once, and where each run's record comes from."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.sources: dict[str, list[Path]] = {}   # record folder in the export -> the files that make it

    def has(self, fingerprint: str) -> bool:
        return any(step["fingerprint"] == fingerprint for step in self.steps)

    def add(self, step: dict[str, Any], files: list[Path] | None = None) -> None:
        if self.has(step["fingerprint"]):
            return
        self.steps.append(step)
        if files:
            self.sources[step["record"]] = files

    def extend(self, other: Lineage) -> None:
        for step in other.steps:
            self.add(step, other.sources.get(step.get("record", "")))

    def write(self, folder: Path, learner_fingerprint: str, copy) -> list[str]:
        """Write `lineage.json` and every run's record into `folder`; `copy(source, target)` copies one file.
        Returns the files written, relative to `folder`."""
        from offline_tools.files import atomic_text

        written = []
        for record, files in self.sources.items():
            for path in files:
                written.append(f"{record}/{copy(path, folder / record / path.name)}")
        with atomic_text(folder / LINEAGE_JSON) as f:
            json.dump({"learner": learner_fingerprint, "steps": self.steps}, f, indent=2)
            f.write("\n")
        return [LINEAGE_JSON, *written]


def collect(checkpoint: Path, record_files: tuple[str, ...]) -> Lineage:
    """What made the learner in `checkpoint`: an exported folder's own lineage, or a run's `best/` as one
    `run` step (after its warm start's lineage), or nothing known (a learner saved by other means)."""
    from models import Learner

    lineage = Lineage()
    fingerprint = Learner.read_meta(checkpoint)["fingerprint"]
    if (checkpoint / LINEAGE_JSON).is_file():
        data = json.loads((checkpoint / LINEAGE_JSON).read_text())
        for step in data["steps"]:
            record = checkpoint / step["record"] if step.get("record") else None
            files = sorted(p for p in record.iterdir() if p.is_file()) if record and record.is_dir() else None
            lineage.add(step, files)
        return lineage
    run = checkpoint.parent
    if not any((run / name).is_file() for name in record_files):
        return lineage
    train_args = run / "train_args.json"
    init = json.loads(train_args.read_text()).get("init_from") if train_args.is_file() else None
    init_fingerprint = None
    if init and (Path(init) / "learner.json").is_file():
        lineage.extend(collect(Path(init), record_files))
        init_fingerprint = Learner.read_meta(Path(init))["fingerprint"]
    lineage.add({"kind": "run", "fingerprint": fingerprint, "record": f"{RUNS}/{fingerprint[:12]}",
                 "init_from": init_fingerprint}, [run / name for name in record_files if (run / name).is_file()])
    return lineage
