"""`regrad evaluate` (offline_tools/evaluation/evaluate.py): HTTP client with retries, in-process twin, output and
score table, against a real uvicorn server with the model-free engine double.

The double answers `<mode>:<question>`, so a gold answer of "rag:<question>" is right in mode rag
only: per-mode scores must then differ exactly that way.
"""

from __future__ import annotations

import json

import pytest

from cli.main import main
from offline_tools.datasets.augmented import AugmentedRecord, write_augmented
from offline_tools.errors import UsageError
from offline_tools.evaluation.evaluate import (
    ServerError,
    evaluate_http,
    evaluate_in_process,
    format_mode_table,
    load_records,
)
from service.app import create_app
from service.settings import Settings

from .conftest import FakeEngine, free_port, running_server


def record(i: int, dataset: str = "hotpotqa", **overrides) -> AugmentedRecord:
    question = overrides.pop("question", f"Question {i}?")
    fields = dict(id=f"q{i}", dataset=dataset, question=question, answers=[f"rag:{question}"],
                  answer_type="short", choices=None, passages=[])
    fields.update(overrides)
    return AugmentedRecord(**fields)


@pytest.fixture(scope="module")
def fake():
    return FakeEngine()


@pytest.fixture(scope="module")
def url(fake):
    settings = Settings(_env_file=None, scheduler="static", max_wait_ms=5, max_question_chars=100)
    with running_server(create_app(settings, engine_factory=lambda _: fake)) as base_url:
        yield base_url


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data_aug" / "hotpotqa" / "dev.jsonl"
    path.parent.mkdir(parents=True)
    write_augmented(path, [record(i) for i in range(5)])
    return path


def test_all_modes_over_http_score_per_mode_and_dataset(url, tmp_path):
    records = [record(i) for i in range(4)] + [record(9, dataset="popqa")]
    result = evaluate_http(url, records, modes=["regrad", "rag", "closed_book"], concurrency=3, progress=False)
    assert len(result.predictions) == 15 and result.errors == 0
    assert [(p["id"], p["mode"]) for p in result.predictions[:3]] == [("q0", "regrad"), ("q0", "rag"),
                                                                     ("q0", "closed_book")]
    assert result.tables["rag"].overall_micro.em == 100.0
    assert result.tables["regrad"].overall_micro.em == 0.0
    assert set(result.tables["rag"].per_dataset) == {"hotpotqa", "popqa"}
    first = result.predictions[1]
    assert first["answer"] == "rag:Question 0?" and first["gold"] == ["rag:Question 0?"]
    assert first["scores"] == {"em": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0}
    assert [p["id"] for p in first["passages"]] == ["p0", "p1", "p2"]
    table = format_mode_table(result.tables)
    assert table.count("overall (micro)") == 3 and "popqa" in table


def test_in_process_gives_the_same_predictions(url):
    records = [record(i) for i in range(3)]
    over_http = evaluate_http(url, records, modes=["rag", "regrad"], progress=False)
    in_process = evaluate_in_process(FakeEngine(), records, modes=["rag", "regrad"], progress=False)

    def strip(predictions):
        return [{k: v for k, v in p.items() if k != "timings_ms"} for p in predictions]

    assert strip(over_http.predictions) == strip(in_process.predictions)


def test_composition_is_sent_with_every_gradient_request_and_recorded(url):
    records = [record(i) for i in range(2)]
    over_http = evaluate_http(url, records, modes=["regrad", "rag"], composition="softmax:0.5", progress=False)
    in_process = evaluate_in_process(FakeEngine(), records, modes=["regrad", "rag"], composition="softmax:0.5",
                                     progress=False)
    for result in (over_http, in_process):
        applied = {(p["mode"], p.get("composition")) for p in result.predictions}
        assert applied == {("regrad", "softmax:0.5"), ("rag", None)}
    with pytest.raises(UsageError, match="--composition mean"):
        evaluate_in_process(FakeEngine(), records, composition="mean", progress=False)


@pytest.mark.parametrize(("field", "sent", "local"), [("stop_bias", 1.5, 2.0), ("beams", 4, 2)])
def test_a_decoding_option_is_sent_with_every_request_or_left_to_the_server(url, fake, field, sent, local):
    records = [record(i) for i in range(2)]
    fake.questions.clear()
    evaluate_http(url, records, modes=["regrad", "closed_book"], progress=False, **{field: sent})
    assert [getattr(q, field) for q in fake.questions] == [sent] * 4
    engine = FakeEngine()
    evaluate_in_process(engine, records, modes=["regrad"], progress=False, **{field: local})
    evaluate_in_process(engine, records, modes=["regrad"], progress=False)
    assert [getattr(q, field) for q in engine.questions] == [local, local, None, None]   # None: the engine's default


def test_503_is_retried_and_refused_items_do_not_stop_the_run(url, fake):
    fake.down_for_batches, fake.retry_after_s = 2, 0.1
    records = [record(0), record(1, question="x" * 150)]  # the second is over the server's 100-char limit
    result = evaluate_http(url, records, modes=["rag"], concurrency=1, max_wait_s=0.2, progress=False)
    assert fake.down_for_batches == 0  # the outage happened and was waited out
    assert result.predictions[0]["answer"] == "rag:Question 0?"
    assert result.errors == 1 and result.predictions[1]["error"].startswith("422")
    assert result.predictions[1]["scores"]["em"] == 0.0


def test_unreachable_server_and_bad_key_are_clear_errors(fake):
    with pytest.raises(ServerError, match="stayed unavailable after 2 tries"):
        evaluate_http(f"http://127.0.0.1:{free_port()}", [record(0)], max_retries=1, max_wait_s=0.05,
                      progress=False)
    app = create_app(Settings(_env_file=None, scheduler="static", api_key="k3y-for-tests"),
                     engine_factory=lambda _: fake)
    with running_server(app) as base_url:
        with pytest.raises(ServerError, match="401"):
            evaluate_http(base_url, [record(0)], progress=False)
        ok = evaluate_http(base_url, [record(0)], api_key="k3y-for-tests", modes=["rag"], progress=False)
        assert ok.tables["rag"].overall_micro.em == 100.0


def test_cli_writes_predictions_and_prints_one_table(url, data_file, tmp_path, capsys):
    output = tmp_path / "out" / "predictions.jsonl"
    code = main(["evaluate", "--url", url, "--data", str(data_file), "--mode", "all", "--limit", "3",
                 "--output", str(output), "--no-progress"])
    assert code == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    modes = {"regrad", "regrad_context", "rag", "closed_book", "rag_base", "closed_book_base", "regrad_shift"}
    assert len(lines) == 3 * len(modes) and {line["mode"] for line in lines} == modes
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if "hotpotqa" in line]
    assert len(rows) == len(modes) and any(row.startswith("rag ") and "100.00" in row for row in rows)
    assert len(load_records([data_file], limit=3)) == 3
    import matplotlib

    picture = output.with_name("scores.png")   # beside scores.json: EM and F1, modes x datasets
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.with_name("scores.json").is_file()
    assert matplotlib.get_backend().lower() == "agg"
    kinds = json.loads(output.with_name("scores.json").read_text())["kinds"]   # every question in one kind
    assert set(kinds) == modes and all(sum(k["n"] for k in kinds[m]["hotpotqa"].values()) == 3 for m in modes)


def test_cli_refuses_bad_usage(data_file, tmp_path, capsys):
    assert main(["evaluate", "--url", "http://127.0.0.1:9", "--data", str(data_file), "--limit", "0",
                 "--output", str(tmp_path / "p.jsonl")]) != 0
    assert "--limit" in capsys.readouterr().err
    missing = main(["evaluate", "--url", "http://127.0.0.1:9", "--data", str(tmp_path / "nope.jsonl"),
                    "--output", str(tmp_path / "p.jsonl")])
    assert missing != 0 and "nope.jsonl" in capsys.readouterr().err
    # A folder where the predictions or scores file should go is refused before any question is asked
    # (the unreachable URL is never called), not after the run with a traceback and the answers lost.
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["evaluate", "--url", "http://127.0.0.1:9", "--data", str(data_file),
                 "--output", str(folder)]) == 2
    refused = capsys.readouterr().err
    assert refused == f"regrad: error: --output {folder} is a folder; give the path of a file to write\n"
    assert main(["evaluate", "--url", "http://127.0.0.1:9", "--data", str(data_file),
                 "--output", str(tmp_path / "p.jsonl"), "--scores", str(folder)]) == 2
    assert f"--scores {folder} is a folder" in capsys.readouterr().err
    assert list(folder.iterdir()) == [] and not (tmp_path / "p.jsonl").exists()


def _with_passages(i: int, ids: list[str]) -> AugmentedRecord:
    from offline_tools.datasets.augmented import AugmentedPassage

    return record(i, passages=[AugmentedPassage(p, p, "text", 1.0) for p in ids])


def test_shift_mode_applies_the_nearest_earlier_question_with_other_passages():
    from offline_tools.evaluation.evaluate import answer_body, make_jobs, shift_partners

    records = [_with_passages(0, ["a"]), _with_passages(1, ["b"]), _with_passages(2, ["b", "c"]),
               _with_passages(3, ["d"])]
    # 2 shares passage b with 1, so it takes 0; 0 wraps around to 3 (the reference's i - 1).
    assert shift_partners(records) == {0: 3, 1: 0, 2: 0, 3: 2}
    jobs = make_jobs(records, ["regrad", "regrad_shift"])
    shifted = [j for j in jobs if j.mode == "regrad_shift"]
    assert [j.shift_query for j in shifted] == ["Question 3?", "Question 0?", "Question 0?", "Question 2?"]
    body = answer_body(shifted[0].record, "regrad_shift", shift_query=shifted[0].shift_query)
    assert body["mode"] == "regrad" and body["retrieval_query"] == "Question 3?"
    assert body["question"] == "Question 0?"
    assert "retrieval_query" not in answer_body(records[0], "regrad")


def test_shift_mode_needs_two_questions():
    from offline_tools.errors import UsageError
    from offline_tools.evaluation.evaluate import make_jobs

    with pytest.raises(UsageError, match="at least 2"):
        make_jobs([record(0)], ["regrad_shift"])


def test_shift_mode_over_http_is_scored_as_its_own_mode(url):
    records = [record(0), record(1), record(2)]
    result = evaluate_http(url, records, modes=["regrad", "regrad_shift"], progress=False)
    shifted = [p for p in result.predictions if p["mode"] == "regrad_shift"]
    assert [p["shift_query"] for p in shifted] == ["Question 2?", "Question 0?", "Question 1?"]
    assert [p["answer"] for p in shifted] == ["regrad:Question 0?", "regrad:Question 1?", "regrad:Question 2?"]
    assert set(result.tables) == {"regrad", "regrad_shift"}
