"""Comments describe the code, not its history: no comment in the packages or the shipped recipe says what a
run was or what the code used to be (the history lives in git and docs/results.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "offline_tools", "service", "engine", "models", "gradient_store", "retrieval", "bench")
HISTORY = re.compile(r"#.*\b(run [0-9]+ (was|is)|was:|used to be|shipped before)", re.IGNORECASE)


def test_no_comment_narrates_history() -> None:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    files += sorted((ROOT / "checkpoints").rglob("*.toml"))
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if HISTORY.search(line)]
    assert not found, "comments that narrate history:\n" + "\n".join(found)


def test_the_pattern_catches_a_history_comment() -> None:
    assert HISTORY.search("x = 1  # run 4 was not shipped")
    assert HISTORY.search("y = 2  # was: a list") and not HISTORY.search("z = 3  # the rows, in order")
