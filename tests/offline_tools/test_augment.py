"""`regrad augment`: batching, no padding, resuming, a real tantivy index, CLI errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

import cli.main as cli
from offline_tools.datasets import QARecord, load_dataset
from offline_tools.datasets.augment import answer_in_passages, augment_records
from offline_tools.datasets.augmented import read_augmented
from offline_tools.errors import ExitStatus


@dataclass
class _Hit:
    id: str
    title: str
    text: str
    score: float


class FakeRetriever:
    """Returns k hits per query; hit 1 of every query has empty text (the reference padded with "")."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[_Hit]]:
        self.calls.append(len(queries))
        return [
            [_Hit(f"{q[:8]}-{rank}", f"T{rank}", "" if rank == 1 else f"text {rank}", 10.0 - rank) for rank in range(k)]
            for q in queries
        ]


def _records(n: int) -> list[QARecord]:
    return [QARecord(f"q{i}", "hotpotqa", f"question number {i}?", [f"a{i}"]) for i in range(n)]


def test_batches_drop_empty_passages_and_never_pad(tmp_path):
    retriever = FakeRetriever()
    output = tmp_path / "data_aug" / "hotpotqa" / "dev.jsonl"
    report = augment_records(_records(5), retriever, output, top_k=3, batch_size=2, show_progress=False)
    assert retriever.calls == [2, 2, 1]
    records = list(read_augmented(output))
    assert [r.id for r in records] == [f"q{i}" for i in range(5)]
    for record in records:
        assert [p.title for p in record.passages] == ["T0", "T2"]  # the empty hit is gone, nothing added
        assert all(p.text for p in record.passages)
    assert report.written == 5 and report.empty_dropped == 5 and report.short_questions == 5
    assert report.passages == 10


class AnsweringRetriever:
    """Even questions get a passage stating their answer `a<i>` (and the word "B"); odd ones only passages
    that do not (one of them holds `a<i>0`, the answer as part of a longer word)."""

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[_Hit]]:
        out = []
        for q in queries:
            i = int(q.split()[-1].rstrip("?"))
            text = f"It is A{i}, option B." if i % 2 == 0 else f"It is a{i}0, not this."
            hits = [_Hit(f"{i}-{rank}", "T", text if rank == 1 else f"text {rank}", 5.0 - rank) for rank in range(k)]
            out.append(hits)
        return out


def test_answerable_keeps_only_questions_their_passages_answer(tmp_path):
    records = [*_records(4), QARecord("yn", "hotpotqa", "is it so, number 0?", ["yes"], answer_type="yes_no"),
               QARecord("mc", "hotpotqa", "which one, number 0?", ["B"], answer_type="choice", choices=["A0", "B"])]
    output = tmp_path / "train.jsonl"
    report = augment_records(records, AnsweringRetriever(), output, top_k=3, show_progress=False, answerable=True)
    # q1 and q3 (their passages say a10, a30), the yes/no and the multiple-choice question (its letter B is in
    # its passage as a word, but a letter is not an answer a passage states): gone
    assert [r.id for r in read_augmented(output)] == ["q0", "q2"]
    assert report.written == 2 and report.unanswerable_dropped == 4 and report.passages == 6
    # without the flag every question is written, and a rerun with it retries only the dropped ones
    assert augment_records(records, AnsweringRetriever(), tmp_path / "all.jsonl", top_k=3,
                           show_progress=False).written == 6
    again = augment_records(records, AnsweringRetriever(), output, top_k=3, show_progress=False, answerable=True)
    assert again.already_done == 2 and again.written == 0 and again.unanswerable_dropped == 4


def test_rerun_skips_done_ids_and_finishes_after_a_crash(tmp_path):
    output = tmp_path / "train.jsonl"
    records = _records(6)
    augment_records(records[:4], FakeRetriever(), output, top_k=2, show_progress=False)
    # Simulate a crash mid-append: a torn fifth line.
    with open(output, "a", encoding="utf-8") as handle:
        handle.write('{"id": "q4", "dataset": "hot')
    retriever = FakeRetriever()
    report = augment_records(records, retriever, output, top_k=2, show_progress=False)
    assert report.already_done == 4 and report.written == 2 and report.repaired_bytes > 0
    assert retriever.calls == [2]
    assert [r.id for r in read_augmented(output)] == [f"q{i}" for i in range(6)]
    # A third run has nothing to do and never calls the retriever.
    idle = FakeRetriever()
    assert augment_records(records, idle, output, top_k=2, show_progress=False).written == 0
    assert idle.calls == []


@pytest.fixture
def hotpot_index(tmp_path, shared_data):
    """A tiny tantivy index over the context paragraphs of 5 real HotpotQA questions."""
    from retrieval import Passage, RetrieverConfig, open_retriever
    from retrieval.passage import passage_id

    source = shared_data / "hotpotqa" / "hotpot_dev_distractor_v1.first100.json"
    questions = json.loads(source.read_text())[:5]
    passages = {}
    for question in questions:
        for title, sentences in question["context"]:
            text = "".join(sentences).strip()
            passages[passage_id(title, text)] = Passage(passage_id(title, text), title, text)
    index_dir = tmp_path / "index"
    retriever = open_retriever(RetrieverConfig(index=str(index_dir), backend="tantivy"))
    try:
        retriever.add(passages.values())
    finally:
        retriever.close()
    return source, questions, index_dir


def _run_cli(monkeypatch, argv: list[str]) -> int:
    # Only this command is registered, so the test does not depend on the others' modules.
    monkeypatch.setattr(cli, "COMMANDS", ["augment"])
    return cli.main(argv)


def test_cli_augments_from_a_real_tantivy_index(tmp_path, monkeypatch, capsys, hotpot_index):
    source, questions, index_dir = hotpot_index
    output = tmp_path / "out.jsonl"
    argv = [
        "augment", "--dataset", "hotpotqa", "--data-path", str(source), "--index", str(index_dir),
        "--split", "all", "--end", "5", "--top-k", "2", "--output", str(output), "--no-progress",
    ]  # fmt: skip
    assert _run_cli(monkeypatch, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == 5 and summary["split_size"] == len(list(load_dataset("hotpotqa", source)))
    records = list(read_augmented(output))
    assert [r.id for r in records] == [q["_id"] for q in questions]
    own_titles = {q["_id"]: {title for title, _ in q["context"]} for q in questions}
    top_is_own = [r.passages[0].title in own_titles[r.id] for r in records if r.passages]
    assert len(top_is_own) == 5 and sum(top_is_own) >= 4  # BM25 finds each question's own paragraphs
    assert all(len(r.passages) <= 2 and r.passages[0].score >= r.passages[-1].score for r in records)
    # Resume: the same command again writes nothing new.
    assert _run_cli(monkeypatch, argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == 0
    assert len(list(read_augmented(output))) == 5


def test_cli_answerable_writes_only_questions_with_the_answer_in_their_passages(tmp_path, monkeypatch, capsys,
                                                                              hotpot_index):
    source, questions, index_dir = hotpot_index
    argv = ["augment", "--dataset", "hotpotqa", "--data-path", str(source), "--index", str(index_dir),
            "--split", "all", "--top-k", "1", "--no-progress"]   # top 1: some questions' answer is elsewhere
    assert _run_cli(monkeypatch, [*argv, "--output", str(tmp_path / "all.jsonl")]) == 0
    everything = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert _run_cli(monkeypatch, [*argv, "--output", str(tmp_path / "kept.jsonl"), "--answerable"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    kept = list(read_augmented(tmp_path / "kept.jsonl"))
    assert summary["written"] == len(kept)
    assert summary["written"] + summary["unanswerable_dropped"] == everything["written"]
    assert 0 < len(kept) < everything["written"]
    by_id = {r.id: r for r in read_augmented(tmp_path / "all.jsonl")}
    assert {r.id for r in kept} == {i for i, r in by_id.items() if answer_in_passages(r.answers, r.passages)}
    assert all(answer_in_passages(r.answers, r.passages) and r.answers[0] not in ("yes", "no") for r in kept)


def test_cli_errors_name_the_file_and_line_without_traceback(tmp_path, monkeypatch, capsys, hotpot_index):
    _, _, index_dir = hotpot_index
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "a", "question_text": "q?", "answers_objects": [{"spans": ["x"]}]}\n{oops\n')
    base = ["augment", "--dataset", "hotpotqa", "--index", str(index_dir), "--output", str(tmp_path / "o.jsonl")]
    status = _run_cli(monkeypatch, [*base, "--data-path", str(bad), "--split", "all"])
    err = capsys.readouterr().err
    assert status == ExitStatus.INPUT
    assert err.startswith(f"regrad: error: {bad}:2: ") and "Traceback" not in err

    status = _run_cli(monkeypatch, [*base, "--data-path", str(tmp_path / "missing.json")])
    err = capsys.readouterr().err
    assert status == ExitStatus.INPUT and "missing.json" in err and "Traceback" not in err

    status = _run_cli(
        monkeypatch,
        ["augment", "--dataset", "hotpotqa", "--data-path", str(bad), "--index", str(tmp_path / "no-index")],
    )
    err = capsys.readouterr().err
    assert status == ExitStatus.INPUT and "no-index" in err and "regrad index" in err


def test_pubmedqa_questions_retrieve_their_own_abstracts(tmp_path, monkeypatch, capsys, shared_data):
    """`regrad index` reads PubMedQA's abstracts; `regrad augment` then finds each question's own."""
    monkeypatch.setattr(cli, "COMMANDS", ["index", "augment"])
    folder, index_dir, output = shared_data / "pubmedqa", tmp_path / "index", tmp_path / "dev.jsonl"
    assert cli.main(["index", "--corpus", str(folder / "ori_pqal.json"), "--index", str(index_dir),
                     "--no-progress"]) == 0
    assert cli.main(["augment", "--dataset", "pubmedqa", "--data-path", str(folder), "--index", str(index_dir),
                     "--split", "dev", "--top-k", "3", "--output", str(output), "--no-progress"]) == 0
    capsys.readouterr()
    records = list(read_augmented(output))
    assert len(records) > 50
    own_first = [r.passages[0].id == f"pubmed-{r.id}" for r in records]
    assert sum(own_first) >= 0.85 * len(records)  # 95 of 99 on the shared file
