"""`bench/dev_reads.py` builds the four dev splits it reads: once, with the commands the rules' reads used."""

from __future__ import annotations

import json
from pathlib import Path


def test_a_split_is_built_once_with_its_index_and_top_5_dev_questions(tmp_path: Path, bench_script):
    dev_reads = bench_script("dev_reads")
    index, questions = dev_reads.build(tmp_path, "composition2")
    rows = [json.loads(line) for line in questions.read_text().splitlines()]
    assert len(rows) == 120 and all(len(r["passages"]) == 5 for r in rows)
    manifest = json.loads((tmp_path / "composition2" / "synth.json").read_text())
    assert manifest["config"]["dev_set"] == 2 and manifest["questions"] == {"train": 0, "dev": 120, "test": 0}
    assert sum(r["passages"][0]["id"] == r["id"] for r in rows) >= 110      # the asked fact first
    stamp = questions.stat().st_mtime_ns
    assert dev_reads.build(tmp_path, "composition2") == (index, questions) and questions.stat().st_mtime_ns == stamp
    assert set(dev_reads.SPLITS) == {"novel", "composition", "novel2", "composition2"}
