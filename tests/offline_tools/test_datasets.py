"""Dataset loaders: real shared data where present, hand-written published-format fixtures otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offline_tools.datasets import DATASETS, QARecord, is_dev, load_dataset, load_split, split_records
from offline_tools.errors import ExitStatus, InputFileError, UsageError


def _load(name: str, path: Path, split: str | None = None) -> list[QARecord]:
    records = list(load_dataset(name, path, split))
    assert records, f"{name}: nothing loaded from {path}"
    assert len({r.id for r in records}) == len(records), "ids must be unique"
    assert all(r.dataset == name for r in records)
    return records


def test_registry_has_the_ten_datasets_and_the_synthetic_benchmark():
    assert set(DATASETS) == {
        "2wikimultihopqa", "hotpotqa", "popqa", "complexwebquestions",
        "pubmedqa", "medqa", "bioasq", "lhf", "housingqa", "casehold", "synth",
    }  # fmt: skip


# --- general domain, shared data -------------------------------------------------------------------


def test_2wiki_prag_format_keeps_alias_lists(shared_data):
    path = shared_data / "2wikimultihopqa" / "prag_dev_first1000.json"
    raw = json.loads(path.read_text())
    records = _load("2wikimultihopqa", path)
    assert len(records) == len(raw)
    for record, item in zip(records, raw):
        assert record.id == str(item["test_id"])
        expected = item["answer"] if isinstance(item["answer"], list) else [item["answer"]]
        assert record.answers == list(dict.fromkeys(a.strip() for a in expected if a.strip()))
        assert record.answer_type == "short" and record.choices is None


def test_hotpotqa_ircot_and_published_files_agree_on_shared_questions(shared_data):
    ircot = {r.id: r for r in _load("hotpotqa", shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl")}
    published = _load("hotpotqa", shared_data / "hotpotqa" / "hotpot_dev_distractor_v1.first100.json")
    assert published and set(r.id for r in published) <= set(ircot)
    for record in published:
        assert record.answers[0] == ircot[record.id].answers[0]
        assert record.question == ircot[record.id].question
    # Comparison questions keep yes/no golds as short answers.
    assert any(r.answers == ["yes"] for r in published) and all(r.answer_type == "short" for r in published)


def test_hotpotqa_folder_reads_each_question_once(shared_data):
    folder = _load("hotpotqa", shared_data / "hotpotqa")
    ircot = _load("hotpotqa", shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl")
    assert {r.id for r in folder} == {r.id for r in ircot}


def test_popqa_flashrag_gold_starts_with_obj_and_aliases(shared_data):
    path = shared_data / "popqa" / "flashrag_popqa_test_sample1000.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = _load("popqa", path)
    assert len(records) == len(raw)
    for record, item in zip(records, raw):
        head = [item["metadata"]["obj"], *json.loads(item["metadata"]["o_aliases"])]
        assert record.answers[: len(dict.fromkeys(head))] == list(dict.fromkeys(head))
        assert set(item["golden_answers"]) <= set(record.answers)


def test_cwq_prag_format(shared_data):
    path = shared_data / "complexwebquestions" / "prag_dev_first1000.json"
    records = _load("complexwebquestions", path)
    assert len(records) == len(json.loads(path.read_text()))
    assert all(a == a.strip() for r in records for a in r.answers)  # "Brazilian " is stripped


# --- general domain, published formats ------------------------------------------------------------


def test_2wiki_published_dev_with_id_aliases(fixtures):
    records = {r.id: r for r in _load("2wikimultihopqa", fixtures / "2wikimultihopqa", "dev")}
    # Canonical answer first, then the aliases of answer_id, each once.
    assert records["2w-001"].answers == ["Pieter Holt", "Pieter J. Holt", "P. Holt"]
    assert records["2w-002"].answers == ["Grey Harbour"]  # empty answer_id: the answer alone
    assert records["2w-003"].answers == ["Karl Brandt"]  # id missing from id_aliases.json: no KeyError


def test_cwq_original_aliases_are_deduplicated_in_order(fixtures):
    records = _load("complexwebquestions", fixtures / "complexwebquestions", "dev")
    assert records[0].answers == ["Brazil", "Brasil", "Federative Republic of Brazil", "BR"]


def test_cwq_alias_order_does_not_depend_on_hash_seed(fixtures):
    code = (
        "import json, sys; from offline_tools.datasets import load_dataset; "
        "print(json.dumps([r.answers for r in load_dataset('complexwebquestions', sys.argv[1], 'dev')]))"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code, str(fixtures / "complexwebquestions")],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        outputs.add(result.stdout)
    assert len(outputs) == 1


def test_popqa_tsv_parses_json_and_python_literals_without_eval(fixtures):
    records = _load("popqa", fixtures / "popqa" / "popQA.tsv")
    assert records[0].answers == ["farmer", "agriculturist", "grower"]
    # o_aliases as a Python literal, then possible_answers adds the other subject's object.
    assert records[1].answers == ["Joan Vale", "Joanna Vale", "J. Vale", "Tom Reed"]


def test_popqa_alias_literal_that_is_code_is_refused(tmp_path, fixtures):
    lines = (fixtures / "popqa" / "popQA.tsv").read_text().splitlines()
    cells = lines[2].split("\t")
    cells[8] = "__import__('os').getcwd()"
    (tmp_path / "popQA.tsv").write_text("\n".join([lines[0], "\t".join(cells)]) + "\n")
    with pytest.raises(InputFileError) as info:
        list(load_dataset("popqa", tmp_path / "popQA.tsv"))
    assert info.value.line == 2 and "o_aliases" in str(info.value)


# --- medicine ------------------------------------------------------------------------------------


def test_pubmedqa_ori_pqal_keeps_maybe(shared_data):
    path = shared_data / "pubmedqa" / "ori_pqal.json"
    raw = json.loads(path.read_text())
    records = _load("pubmedqa", path)
    assert [r.id for r in records] == list(raw)
    assert [r.answers[0] for r in records] == [v["final_decision"] for v in raw.values()]
    assert {r.answers[0] for r in records} == {"yes", "no", "maybe"}
    assert all(r.answer_type == "yes_no" for r in records)


def test_pubmedqa_folder_splits_by_official_test_pmids(shared_data):
    folder = shared_data / "pubmedqa"
    truth = set(json.loads((folder / "test_ground_truth.json").read_text()))
    test = load_split("pubmedqa", folder, "test")
    train = load_split("pubmedqa", folder, "train")
    dev = load_split("pubmedqa", folder, "dev")
    assert {r.id for r in test} == truth
    pool = {r.id for r in load_split("pubmedqa", folder, "all")} - truth
    assert {r.id for r in train} | {r.id for r in dev} == pool
    assert not {r.id for r in train} & {r.id for r in dev}


def test_pubmedqa_regrad_jsonl_reads_the_final_decision(fixtures):
    dev = _load("pubmedqa", fixtures / "pubmedqa", "dev")
    assert [r.answers for r in dev] == [["yes"], ["no"], ["maybe"], ["yes"]]
    assert _load("pubmedqa", fixtures / "pubmedqa", "train")[0].answers == ["no"]


def test_pubmedqa_answer_without_decision_names_the_line(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text('{"question": "q1?", "answer": "yes"}\n{"question": "q2?", "answer": "it depends"}\n')
    with pytest.raises(InputFileError) as info:
        list(load_dataset("pubmedqa", path))
    assert info.value.line == 2 and "decision" in str(info.value)


def test_medqa_shared_copy_letters_match_option_texts(shared_data):
    path = shared_data / "medqa" / "medqa_us_4opt_test.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = _load("medqa", path)
    assert len(records) == len(raw)
    for record, item in zip(records, raw):
        assert record.answer_type == "choice" and len(record.choices) == 4
        assert record.answers == [item["answer_idx"]]
        assert record.choices["ABCD".index(item["answer_idx"])] == item["answer"]


def test_medqa_published_five_options_and_letter_from_answer_text(fixtures):
    records = _load("medqa", fixtures / "medqa" / "US", "test")
    assert [len(r.choices) for r in records] == [5, 5]
    assert records[0].answers == ["B"]
    assert records[1].answers == ["C"]  # no answer_idx: found from the answer text
    four = _load("medqa", fixtures / "medqa" / "US" / "4_options", "test")
    assert four[0].answers == ["D"] and four[0].choices[3] == "Iron deficiency"


def test_bioasq_shared_batches(shared_data):
    records = _load("bioasq", shared_data / "bioasq")
    raw = [q for f in sorted((shared_data / "bioasq").glob("*.json")) for q in json.loads(f.read_text())["questions"]]
    by_id = {q["id"]: q for q in raw}
    assert len(records) == sum(q["type"] != "summary" for q in raw)
    for record in records:
        kind = by_id[record.id]["type"]
        assert record.answer_type == ("yes_no" if kind == "yesno" else "short")
        if kind == "list":
            assert (
                len(record.answers) == 1 and record.answers[0].count(", ") >= len(by_id[record.id]["exact_answer"]) - 1
            )


def test_bioasq_types_and_training_split(fixtures):
    train = {r.id: r for r in _load("bioasq", fixtures / "bioasq", "train")}
    assert set(train) == {"t1", "t2", "t3", "t5"}  # the summary question is skipped
    assert train["t1"].answers == ["yes"] and train["t1"].answer_type == "yes_no"
    assert train["t2"].answers == ["CFTR", "cystic fibrosis transmembrane conductance regulator"]
    assert train["t3"].answers == ["atorvastatin, simvastatin"]
    assert train["t5"].answers == ["Fe"]
    assert {r.id for r in _load("bioasq", fixtures / "bioasq", "all")} == set(train) | {"g1"}


# --- law (fixtures only: no law data ships) ---------------------------------------------------------


def test_lhf_regrad_jsonl_and_legalbench_tsv(fixtures):
    dev = _load("lhf", fixtures / "lhf", "dev")
    assert [r.answers for r in dev] == [["yes"], ["no"]] and all(r.answer_type == "yes_no" for r in dev)
    test = _load("lhf", fixtures / "lhf", "test")
    assert [r.answers for r in test] == [["yes"], ["no"]]
    assert "adopt my stepdaughter" in test[0].question and "family law" in test[0].question
    assert '"what now"' in test[1].question  # the TSV's doubled quotes are unescaped


def test_housingqa_regrad_and_reglab_formats(fixtures):
    dev = _load("housingqa", fixtures / "housingqa", "dev")
    assert [r.answers for r in dev] == [["yes"], ["no"]]
    reglab = _load("housingqa", fixtures / "housingqa_reglab")
    assert [r.id for r in reglab] == ["17", "18"]
    assert reglab[0].question.startswith("Consider statutory law for Alaska in the year 2021.")


def test_casehold_answers_become_letters_in_every_format(fixtures):
    dev = _load("casehold", fixtures / "casehold", "dev")
    # letter, 0-based index, and exact option text
    assert [r.answers for r in dev] == [["B"], ["C"], ["E"]]
    assert all(r.answer_type == "choice" and len(r.choices) == 5 for r in dev)
    csv_records = _load("casehold", fixtures / "casehold_csv")
    assert [r.answers for r in csv_records] == [["E"], ["A"]]
    assert "with a comma, inside" in csv_records[1].question
    lexglue = _load("casehold", fixtures / "casehold_lexglue")
    assert lexglue[0].answers == ["B"] and lexglue[0].choices[1].startswith("holding that a prior felony")


def test_casehold_wrong_number_of_choices_names_the_line(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": "A"}) + "\n")
    with pytest.raises(InputFileError) as info:
        list(load_dataset("casehold", path))
    assert info.value.line == 1 and "choices" in str(info.value)


# --- folders, splits and errors --------------------------------------------------------------------


def test_folder_with_split_files_refuses_a_missing_split(fixtures):
    with pytest.raises(InputFileError) as info:
        load_split("2wikimultihopqa", fixtures / "2wikimultihopqa", "train")
    assert "'dev'" in str(info.value) and info.value.exit_status == ExitStatus.INPUT


def test_split_records_is_disjoint_deterministic_and_stable(shared_data):
    records = _load("hotpotqa", shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl")
    train = split_records(records, "train")
    dev = split_records(records, "dev")
    assert {r.id for r in train}.isdisjoint(r.id for r in dev)
    assert len(train) + len(dev) == len(records)
    assert 0.15 < len(dev) / len(records) < 0.35  # 0.25 expected; a hash is not exact
    assert [r.id for r in split_records(records, "dev")] == [r.id for r in dev]
    # A question keeps its side in any subset of the file.
    assert [r.id for r in split_records(records[:50], "dev")] == [
        r.id for r in dev if r.id in {x.id for x in records[:50]}
    ]
    assert all(is_dev(r.id, 0.25) for r in dev)
    bigger_dev = split_records(records, "dev", dev_fraction=0.5)
    assert {r.id for r in dev} <= {r.id for r in bigger_dev}


def test_load_split_on_a_single_file_carves_train_and_dev(shared_data):
    path = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl"
    train = load_split("hotpotqa", path, "train")
    dev = load_split("hotpotqa", path, "dev")
    assert len(train) + len(dev) == len(load_split("hotpotqa", path, "all"))
    assert len(load_split("hotpotqa", path, "test")) == len(train) + len(dev)


def test_bad_dev_fraction_and_split_are_usage_errors(shared_data):
    path = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl"
    with pytest.raises(UsageError, match="dev-fraction"):
        load_split("hotpotqa", path, "dev", dev_fraction=1.5)
    with pytest.raises(UsageError):
        load_split("hotpotqa", path, "validation")
    with pytest.raises(UsageError, match="unknown dataset"):
        load_split("squad", path, "dev")


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ('{"question_id": "a", "question_text": "q?", "answers_objects": [{"spans": ["x"]}]}\n{"question_id": ', 2,
         "invalid JSON"),
        ('{"question_id": "a", "question_text": "q?", "answers_objects": [{"spans": ["x"]}]}\n\n[1, 2]\n', 3,
         "expected an object"),
        ('{"_id": "a", "question": "q?"}\n', 1, "answer"),
    ],
)  # fmt: skip
def test_malformed_jsonl_names_file_and_line(tmp_path, content, line, needle):
    path = tmp_path / "questions.jsonl"
    path.write_text(content)
    with pytest.raises(InputFileError) as info:
        list(load_dataset("hotpotqa", path))
    assert info.value.line == line and info.value.path == str(path)
    assert needle in str(info.value) and str(info.value).startswith(f"{path}:{line}: ")


def test_missing_path_and_empty_folder_are_input_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        list(load_dataset("medqa", tmp_path / "nope.jsonl"))
    with pytest.raises(InputFileError, match="no medqa question files"):
        list(load_dataset("medqa", tmp_path))


def test_record_round_trip_and_validation():
    record = QARecord("q1", "casehold", "text", ["C"], "choice", ["a", "b", "c", "d", "e"])
    assert QARecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(ValueError, match="choice gold"):
        QARecord("q1", "casehold", "text", ["F"], "choice", ["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="yes/no gold"):
        QARecord("q1", "lhf", "text", ["perhaps"], "yes_no")
    with pytest.raises(ValueError, match="answers"):
        QARecord("q1", "hotpotqa", "text", [])
