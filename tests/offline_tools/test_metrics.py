"""Metrics on hand-made cases: normalisation, alias handling, yes/no and choice, aggregation, kinds."""

from __future__ import annotations

import math

import pytest

from offline_tools.datasets import QARecord
from offline_tools.datasets.augmented import AugmentedRecord
from offline_tools.evaluation.kinds import ANSWERED_F1, format_kinds, kinds_of, question_kind
from offline_tools.evaluation.metrics import (
    Scores,
    aggregate,
    extract_choice,
    extract_yes_no,
    format_table,
    normalize_answer,
    score,
    score_items,
    score_records,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple,  a pear ", "apple pear"),
        ("A", "a"),  # a lone "a" is option letter A, not an article
        ("A.", "a"),
        ("Theatre", "theatre"),  # articles only as whole words
        ("U.S.A.", "usa"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_is_max_over_aliases():
    assert score("Brasil", ["Brazil", "Brasil"]).em == 1.0
    assert score("Brazil!", ["brazil"]).em == 1.0
    assert score("Argentina", ["Brazil", "Brasil"]).em == 0.0


def test_token_f1_precision_recall():
    s = score("the big red barn", ["red barn door"])
    # prediction tokens: big red barn (3); gold: red barn door (3); common 2
    assert math.isclose(s.precision, 2 / 3) and math.isclose(s.recall, 2 / 3)
    assert math.isclose(s.f1, 2 / 3) and s.em == 0.0


def test_f1_tuple_comes_from_the_best_f1_alias_first_on_ties():
    # alias 1: P=1 R=2/5 F1=4/7; alias 2: P=1/2 R=1 F1=2/3 -> alias 2's P and R, not the max of each
    s = score("red barn", ["red barn door extra more", "red"])
    assert math.isclose(s.f1, 2 / 3)
    assert math.isclose(s.precision, 1 / 2) and math.isclose(s.recall, 1.0)
    # equal F1 (2/3) with different P/R: the first alias wins
    first = score("x y", ["x y z w", "x"])
    assert math.isclose(first.precision, 1.0) and math.isclose(first.recall, 0.5)
    swapped = score("x y", ["x", "x y z w"])
    assert math.isclose(swapped.precision, 0.5) and math.isclose(swapped.recall, 1.0)


def test_yes_no_words_get_no_partial_credit_in_short_answers():
    # A yes/no/noanswer word on either side only matches itself, although a token is shared.
    assert score("yes indeed", ["yes"]).f1 == 0.0
    assert score("no", ["no way"]).f1 == 0.0
    assert score("no way", ["no way out"]).f1 > 0.0  # neither side is a special word
    assert score("noanswer", ["no answer"]).f1 == 0.0


def test_no_common_token_scores_zero():
    assert score("Paris", ["London"]) == Scores(0.0, 0.0, 0.0, 0.0)


def test_a_single_string_gold_is_one_alias():
    assert score("Paris", "Paris").em == 1.0


@pytest.mark.parametrize(
    ("prediction", "word"),
    [("Yes", "yes"), ("no.", "no"), ("The answer is yes, it does.", "yes"), ("Maybe", "maybe"), ("unclear", "unclear")],
)
def test_extract_yes_no(prediction, word):
    assert extract_yes_no(prediction) == word


def test_yes_no_scoring_including_maybe_golds():
    assert score("Yes, it does.", ["yes"], "yes_no") == Scores(1.0, 1.0, 1.0, 1.0)
    assert score("no", ["yes"], "yes_no") == Scores(0.0, 0.0, 0.0, 0.0)
    assert score("maybe", ["maybe"], "yes_no").em == 1.0
    assert score("yes", ["maybe"], "yes_no").em == 0.0  # a yes/no-only model never scores on maybe


@pytest.mark.parametrize(
    ("prediction", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(C)", "C"),
        ("D. Cross-linking of DNA", "D"),
        ("Answer: a", "A"),
        ("Cross-linking of DNA", "D"),  # the option text itself
        ("a drug", ""),  # a lower-case article is not option A
        ("F", ""),
    ],
)
def test_extract_choice(prediction, letter):
    choices = ["Inhibition of proteasome", "Microtubules", "Free radicals", "Cross-linking of DNA"]
    assert extract_choice(prediction, choices) == letter


def test_choice_scoring_compares_letters():
    choices = ["w", "x", "y", "z", "v"]
    assert score("C", ["C"], "choice", choices).em == 1.0
    assert score("The answer is C", ["C"], "choice", choices).em == 0.0  # not a leading letter
    assert score("A", ["C"], "choice", choices) == Scores(0.0, 0.0, 0.0, 0.0)
    assert score("y", ["C"], "choice", choices).em == 1.0  # option text "y" is C


def test_unknown_answer_type_and_no_gold_raise():
    with pytest.raises(ValueError, match="answer_type"):
        score("x", ["x"], "essay")
    with pytest.raises(ValueError, match="no gold"):
        score("x", [])


def test_aggregate_micro_macro_without_rounding():
    items = [
        ("a", Scores(1.0, 1.0, 1.0, 1.0)),
        ("a", Scores(0.0, 0.0, 0.0, 0.0)),
        ("a", Scores(0.0, 0.5, 0.5, 0.5)),
        ("b", Scores(1.0, 1.0, 1.0, 1.0)),
    ]
    table = aggregate(items)
    assert table.per_dataset["a"].n == 3 and table.per_dataset["b"].n == 1
    assert math.isclose(table.per_dataset["a"].em, 100 / 3)  # 33.333..., not 33.33
    assert math.isclose(table.per_dataset["a"].f1, 50.0)
    assert math.isclose(table.overall_micro.em, 50.0)  # 2 of 4 questions
    assert math.isclose(table.overall_macro.em, (100 / 3 + 100) / 2)  # mean of dataset means
    assert table.overall_micro.n == table.overall_macro.n == 4
    assert table.to_dict()["datasets"]["a"]["n"] == 3


def test_aggregate_of_nothing_is_zero():
    table = aggregate([])
    assert table.per_dataset == {} and table.overall_micro.n == 0 and table.overall_macro.em == 0.0


def test_score_records_uses_each_records_answer_type():
    records = [
        QARecord("1", "hotpotqa", "q", ["Chief of Protocol"]),
        QARecord("2", "pubmedqa", "q", ["no"], "yes_no"),
        AugmentedRecord("3", "medqa", "q", ["B"], "choice", ["x", "y", "z", "w"], passages=[]),
    ]
    predictions = ["chief of protocol", "No.", "y"]
    items = score_items(zip(predictions, records))
    assert [d for d, _ in items] == ["hotpotqa", "pubmedqa", "medqa"]
    assert all(s.em == 1.0 for _, s in items)
    table = score_records(zip(["wrong", "yes", "A"], records))
    assert table.overall_micro.em == 0.0 and set(table.per_dataset) == {"hotpotqa", "pubmedqa", "medqa"}


def test_format_table_has_a_row_per_dataset_and_two_overall_rows():
    table = aggregate([("hotpotqa", Scores(1.0, 1.0, 1.0, 1.0)), ("popqa", Scores(0.0, 0.25, 0.5, 0.2))])
    text = format_table(table)
    lines = text.splitlines()
    assert lines[0].split() == ["dataset", "n", "EM", "F1", "prec", "recall"]
    rows = {line.split()[0]: line.split() for line in lines if line and line[0].isalpha()}
    assert rows["hotpotqa"][1:] == ["1", "100.00", "100.00", "100.00", "100.00"]
    assert rows["popqa"][2:4] == ["0.00", "25.00"]
    assert any(line.startswith("overall (micro)") for line in lines)
    assert any(line.startswith("overall (macro)") for line in lines)
    assert len({len(line) for line in lines if not line.startswith("-")}) == 1  # fixed width


@pytest.mark.parametrize(
    ("gold", "answer_type", "kind"),
    [
        (["no"], "short", "yes/no"),     # HotpotQA's comparison questions are short answers with gold yes/no
        (["Yes."], "short", "yes/no"),
        (["yes", "no"], "short", "yes/no"),
        (["no", "Norway"], "short", "short"),
        (["Salvia"], "short", "short"),
        (["maybe"], "yes_no", "yes/no"),
        (["B"], "choice", "choice"),
        ("no", "short", "yes/no"),       # a plain string is one alias
    ],
)
def test_question_kind(gold, answer_type, kind):
    assert question_kind(gold, answer_type) == kind


def _line(mode: str, answer: str, gold: list[str], **extra) -> dict:
    return {"dataset": "hotpotqa", "mode": mode, "answer": answer, "gold": gold, "answer_type": "short", **extra}


def test_kinds_score_yes_no_apart_and_count_the_yes_habit():
    lines = [
        _line("regrad", "no", ["no"]),
        _line("regrad", "Yes, both are", ["no"]),    # says "yes"; a short answer, so no partial credit either
        _line("regrad", "yes", ["yes"]),
        _line("regrad", "No, they are not", ["no"]),  # no credit from HotpotQA's metric; its first word is right
        _line("regrad", "Salvia", ["Salvia"]),
        _line("regrad", "a big old city called Lyon", ["Lyon"]),   # F1 1/3: not answered
        _line("rag", "Paris", ["Paris"]),
        {**_line("regrad", "no", ["yes"], answer_type="yes_no"), "dataset": "pubmedqa"},
    ]
    kinds = kinds_of(lines)
    assert list(kinds) == ["regrad", "rag"] and list(kinds["regrad"]) == ["hotpotqa", "pubmedqa"]
    yes_no, short = kinds["regrad"]["hotpotqa"]["yes/no"], kinds["regrad"]["hotpotqa"]["short"]
    assert (yes_no.n, yes_no.answered, yes_no.gold_yes, yes_no.said_yes, yes_no.word_right) == (4, 2, 1, 2, 3)
    assert yes_no.em == 50.0
    lyon = score("a big old city called Lyon", ["Lyon"]).f1
    assert lyon < ANSWERED_F1
    assert (short.n, short.answered, short.gold_yes, short.said_yes, short.word_right) == (2, 1, 0, 0, 0)
    assert short.f1 == pytest.approx(100 * (1 + lyon) / 2) and short.em == 50.0
    assert list(kinds["rag"]["hotpotqa"]) == ["short"]
    assert kinds["regrad"]["pubmedqa"]["yes/no"].to_dict() == {"n": 1, "em": 0.0, "f1": 0.0, "answered": 0,
                                                              "gold_yes": 1, "said_yes": 0, "word_right": 0}

    text = format_kinds(kinds).splitlines()
    rows = [line.split() for line in text if line.startswith(("regrad", "rag"))]
    assert ["regrad", "hotpotqa", "yes/no", "4", "50.00", "50.00", "2", "3", "2", "/", "1"] in rows
    assert ["regrad", "hotpotqa", "short", "2", "50.00"] in [row[:5] for row in rows]
    assert ["regrad", "pubmedqa", "yes/no", "1", "0.00", "0.00", "0", "0", "0", "/", "1"] in rows
    assert not any(row[0] == "rag" for row in rows)   # rag's hotpotqa has no yes/no question: not shown
    assert format_kinds(kinds_of([_line("rag", "Paris", ["Paris"])])) == ""
