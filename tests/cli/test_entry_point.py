"""The `regrad` entry point: version, help on every flag, and `regrad score`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cli.main import COMMANDS, build_parser, main
from engine import __version__
from offline_tools.evaluation.metrics import score


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_is_the_package_version_and_the_openapi_version(capsys: pytest.CaptureFixture) -> None:
    from service.app import create_app
    from service.settings import Settings

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"regrad {__version__}"
    assert create_app(Settings(_env_file=None)).openapi()["info"]["version"] == __version__


def test_every_verb_and_every_flag_has_help() -> None:
    verbs = _subparsers(build_parser())
    assert list(verbs) == COMMANDS
    missing = [
        f"{verb} {action.option_strings or action.dest}"
        for verb, parser in verbs.items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert not missing, f"flags without a help text: {missing}"


def _line(dataset: str, mode: str, answer: str, gold: list[str], **extra) -> dict:
    return {"id": "q", "dataset": dataset, "mode": mode, "question": "?", "answer": answer, "gold": gold,
            "answer_type": "short", **extra}


def test_score_rescored_file_and_scores_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = [
        _line("a", "regrad", "Paris", ["Paris"]),
        _line("a", "regrad", "the city of Lyon", ["Lyon"]),
        _line("b", "regrad", "no", ["yes"], answer_type="yes_no"),
        _line("a", "rag", "Blue", ["B"], answer_type="choice", choices=["Red", "Blue"]),
        # a stale stored score is ignored: the line is scored again
        _line("b", "rag", "x", ["y"], scores={"em": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0}),
    ]
    predictions = tmp_path / "run" / "predictions.jsonl"
    predictions.parent.mkdir()
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))

    assert main(["score", str(predictions)]) == 0
    written = json.loads((tmp_path / "run" / "scores.json").read_text())
    regrad, rag = written["modes"]["regrad"], written["modes"]["rag"]
    lyon = score("the city of Lyon", ["Lyon"]).f1 * 100
    assert regrad["datasets"]["a"]["em"] == 50.0 and regrad["datasets"]["a"]["f1"] == pytest.approx((100 + lyon) / 2)
    assert regrad["datasets"]["b"]["em"] == 0.0 and regrad["overall_micro"]["n"] == 3
    assert rag["datasets"]["a"]["em"] == 100.0  # "Blue" is option B: read through the line's choices
    assert rag["datasets"]["b"]["em"] == 0.0
    assert written["predictions"] == str(predictions)
    # yes/no questions apart from short answers: dataset b's yes/no line, answered "no" to a "yes" gold
    assert written["kinds"]["regrad"]["b"] == {"yes/no": {"n": 1, "em": 0.0, "f1": 0.0, "answered": 0,
                                                          "gold_yes": 1, "said_yes": 0, "word_right": 0}}
    short = written["kinds"]["regrad"]["a"]["short"]
    assert short["n"] == 2 and short["answered"] == 2   # "the city of Lyon" has F1 0.5: answered
    out = capsys.readouterr().out
    assert "regrad" in out
    by_kind = out[out.index("by kind"):].splitlines()
    assert any(line.split()[:3] == ["regrad", "b", "yes/no"] and line.endswith("0 / 1") for line in by_kind)
    import matplotlib
    from PIL import Image

    picture = tmp_path / "run" / "scores.png"   # beside scores.json: EM and F1, modes x datasets
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend().lower() == "agg"
    with Image.open(picture) as image:
        assert image.width > image.height > 100


def test_score_names_the_file_and_line_of_a_bad_prediction(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps(_line("a", "regrad", "x", ["x"])) + "\n{not json\n")
    assert main(["score", str(bad), "--output", str(tmp_path / "s.json")]) == 3
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
