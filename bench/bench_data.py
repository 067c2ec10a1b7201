"""Real passages for the benchmarks: HotpotQA (IRCoT) paragraphs from the shared data folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def hotpot_passages(n: int) -> list[str]:
    """The first `n` distinct paragraphs, formatted as everywhere else (`format_passage`)."""
    from models import format_passage

    seen, out = set(), []
    with open(DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl") as f:
        for line in f:
            for ctx in json.loads(line)["contexts"]:
                key = (ctx["title"], ctx["paragraph_text"])
                if key not in seen:
                    seen.add(key)
                    out.append(format_passage(*key))
                if len(out) == n:
                    return out
    return out
