"""Re-score a predictions file (`regrad score`) and write `scores.json`, the file `evaluate` writes too.

Each prediction line is scored again from its `answer`, `gold`, `answer_type` (and `choices`) with
the current metrics, so a file written before a metrics change can be compared with a new one.

    predictions = read_predictions("predictions.jsonl")
    write_scores("scores.json", rescore(predictions), source="predictions.jsonl",
                 kinds=kinds_of(predictions))   # offline_tools.evaluation.kinds: yes/no apart from short answers
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from offline_tools.errors import InputFileError
from offline_tools.evaluation.kinds import kinds_to_dict
from offline_tools.evaluation.metrics import ScoreTable, aggregate, score_line
from offline_tools.files import atomic_text

__all__ = ["read_predictions", "rescore", "tables_of", "write_scores", "scores_path_for", "scores_png_for",
           "write_scores_png"]

_REQUIRED = ("dataset", "mode", "answer", "gold")


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The prediction lines of `path`; InputFileError naming the file and line for a bad one."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(str(path), "no such predictions file")
    lines: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputFileError(str(path), f"not JSON ({error.msg}); expected one prediction object per "
                                     "line, as `regrad evaluate` writes", number) from None
            missing = [key for key in _REQUIRED if not isinstance(line, dict) or key not in line]
            if missing:
                raise InputFileError(str(path), f"missing field(s) {', '.join(missing)}; expected a line "
                                     "written by `regrad evaluate`", number)
            lines.append(line)
    if not lines:
        raise InputFileError(str(path), "no predictions in the file")
    return lines


def rescore(predictions: Sequence[dict[str, Any]]) -> dict[str, ScoreTable]:
    """A score table per mode (in order of first appearance), each line scored anew."""
    items: dict[str, list] = {}
    for line in predictions:
        items.setdefault(line["mode"], []).append((line["dataset"], score_line(line)))
    return {mode: aggregate(pairs) for mode, pairs in items.items()}


def tables_of(tables: dict[str, ScoreTable], *, source: str | Path | None = None, errors: int = 0,
              kinds: dict[str, Any] | None = None, paired: dict[str, Any] | None = None,
              against: str | Path | None = None) -> dict[str, Any]:
    """The content of scores.json: scores in 0..100 per mode, per dataset and overall; with `kinds`
    (`kinds.kinds_of`), the same per kind of question under "kinds"; with `paired` (`paired.compare`
    against the predictions file `against`), the question-by-question comparison under "paired"."""
    content: dict[str, Any] = {
        "predictions": str(source) if source is not None else None,
        "errors": errors,
        "modes": {mode: table.to_dict() for mode, table in tables.items()},
    }
    if kinds is not None:
        content["kinds"] = kinds_to_dict(kinds)
    if paired is not None:
        from offline_tools.evaluation.paired import comparison_to_dict

        content["paired"] = comparison_to_dict(paired, against=str(against) if against is not None else None)
    return content


def write_scores(path: str | Path, tables: dict[str, ScoreTable], *, source: str | Path | None = None,
                 errors: int = 0, kinds: dict[str, Any] | None = None, paired: dict[str, Any] | None = None,
                 against: str | Path | None = None) -> Path:
    """Write scores.json atomically (temp file, then rename)."""
    with atomic_text(path) as handle:
        json.dump(tables_of(tables, source=source, errors=errors, kinds=kinds, paired=paired, against=against),
                  handle, indent=2)
        handle.write("\n")
    return Path(path)


def scores_path_for(predictions: str | Path) -> Path:
    """Where scores.json goes by default: beside the predictions file."""
    return Path(predictions).with_name("scores.json")


def scores_png_for(scores: str | Path) -> Path:
    """Where the scores' picture goes: beside scores.json, as scores.png."""
    return Path(scores).with_suffix(".png")


def write_scores_png(scores: str | Path, tables: dict[str, ScoreTable]) -> Path:
    """Grouped bars of EM and F1, modes × datasets (`plots.plot_scores`), written to `scores_png_for(scores)`."""
    from offline_tools.training.plots import plot_scores

    return plot_scores({mode: table.to_dict() for mode, table in tables.items()}, scores_png_for(scores),
                       title=Path(scores).name)
