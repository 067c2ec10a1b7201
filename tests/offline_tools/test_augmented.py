"""The augmented file: exact format, round trip, torn-line repair, located errors."""

from __future__ import annotations

import json

import pytest

from offline_tools.datasets.augmented import (
    AugmentedPassage,
    AugmentedRecord,
    AugmentedWriter,
    read_augmented,
    repair_torn_tail,
    write_augmented,
)
from offline_tools.errors import InputFileError


def _record(i: int, dataset: str = "hotpotqa") -> AugmentedRecord:
    return AugmentedRecord(
        id=f"q{i}",
        dataset=dataset,
        question=f"Question {i} about Małgorzata?",
        answers=[f"answer {i}", f"alias {i}"],
        passages=[AugmentedPassage(id=f"p{i}", title=f"Title {i}", text=f"Text {i}.", score=12.5 - i)],
    )


def test_line_format_is_exactly_the_contract(tmp_path):
    path = tmp_path / "dev.jsonl"
    write_augmented(path, [_record(1)])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert list(data) == ["id", "dataset", "question", "answers", "answer_type", "choices", "passages"]
    assert data["choices"] is None and data["answer_type"] == "short"
    assert data["passages"] == [{"id": "p1", "title": "Title 1", "text": "Text 1.", "score": 11.5}]
    assert "Małgorzata" in lines[0]  # UTF-8, not \u escapes


def test_round_trip_with_choices(tmp_path):
    choice = AugmentedRecord("m1", "medqa", "Which?", ["B"], "choice", ["w", "x", "y", "z"], passages=[])
    records = [_record(1), choice, _record(2)]
    path = tmp_path / "a" / "b.jsonl"
    assert write_augmented(path, records) == 3
    assert list(read_augmented(path)) == records


def test_writer_resumes_and_repairs_a_torn_line(tmp_path):
    path = tmp_path / "train.jsonl"
    with AugmentedWriter(path) as writer:
        writer.write(_record(1))
        writer.write(_record(2))
    whole = path.read_bytes()
    # A crash in the middle of the third append leaves half a line without its newline.
    third = json.dumps(_record(3).to_dict()).encode()
    path.write_bytes(whole + third[: len(third) // 2])
    with pytest.raises(InputFileError) as info:
        list(read_augmented(path))
    assert info.value.line == 3 and "torn" in str(info.value)

    with AugmentedWriter(path) as writer:
        assert writer.repaired_bytes == len(third) // 2
        assert writer.done_ids == {"q1", "q2"}
        writer.write(_record(3))
    assert [r.id for r in read_augmented(path)] == ["q1", "q2", "q3"]


def test_repair_of_a_file_that_is_one_torn_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "q1", "datas')
    assert repair_torn_tail(path) == len('{"id": "q1", "datas')
    assert path.read_bytes() == b""
    assert repair_torn_tail(path) == 0 and repair_torn_tail(tmp_path / "missing.jsonl") == 0


def test_writer_refuses_a_file_of_another_dataset(tmp_path):
    path = tmp_path / "dev.jsonl"
    write_augmented(path, [_record(1, "popqa")])
    with pytest.raises(InputFileError, match="'popqa'"):
        AugmentedWriter(path, dataset="hotpotqa")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("passages"), "passages"),
        (lambda d: d.pop("answers"), "answers"),
        (lambda d: d["passages"][0].pop("score"), "score"),
        (lambda d: d["passages"][0].update(score="high"), "score"),
        (lambda d: d.update(answer_type="essay"), "answer_type"),
        (lambda d: d.update(answers=[]), "answers"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, mutate, needle):
    good = _record(1).to_dict()
    bad = _record(2).to_dict()
    mutate(bad)
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputFileError) as info:
        list(read_augmented(path))
    assert info.value.line == 2 and needle in str(info.value)
    assert str(info.value).startswith(f"{path}:2: ")


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputFileError, match="regrad augment"):
        list(read_augmented(tmp_path / "nope.jsonl"))
