"""Two predictions files compared question by question (offline_tools/evaluation/paired.py, `regrad score
--against`): McNemar's exact test on the EM flips, a paired bootstrap of the F1 difference, answers changed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cli.main import main
from offline_tools.errors import InputFileError, UsageError
from offline_tools.evaluation.paired import compare, format_comparison, mcnemar_exact


def _line(qid: str, answer: str, gold: str, dataset: str = "synth", mode: str = "regrad") -> dict:
    return {"id": qid, "dataset": dataset, "mode": mode, "question": "?", "answer": answer, "gold": [gold],
            "answer_type": "short"}


def test_mcnemar_exact_is_the_two_sided_binomial_tail_of_the_flips():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)                       # 2 · P[X ≤ 0], X ~ Bin(5, ½)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)          # symmetric in A and B
    assert mcnemar_exact(1, 9) == mcnemar_exact(9, 1)
    assert mcnemar_exact(2, 4) == pytest.approx(min(1, 2 * sum(math.comb(6, i) for i in range(3)) / 64))


def test_compare_pairs_by_id_and_mode_counts_the_flips_and_the_changed_answers():
    gold = [f"v{i}" for i in range(20)]
    a = [_line(f"q{i}", gold[i] if i < 15 else "wrong", gold[i]) for i in range(20)]      # 15 right
    b = [_line(f"q{i}", gold[i] if i >= 5 else "nope", gold[i]) for i in range(20)]       # 15 right, others
    b[7]["answer"] = f"{gold[7]} extra"        # right in A, wrong in B by EM, F1 partial: a changed answer
    b.append(_line("only-b", "x", "x"))
    result = compare(a, b)
    [pair] = result["pairs"]
    assert (pair.n, pair.em_a, pair.em_b) == (20, 75.0, 70.0)
    assert (pair.only_a, pair.only_b) == (6, 5)    # q0–q4 and q7 for A; q15–q19 for B
    assert pair.p_value == pytest.approx(mcnemar_exact(6, 5)) and pair.p_value == 1.0
    assert pair.changed == 11                      # q0–q4, q7, q15–q19
    assert result["unpaired"] == {"a": 0, "b": 1}
    assert pair.f1_low <= pair.f1_a - pair.f1_b <= pair.f1_high
    assert compare(a, b)["pairs"][0] == pair       # the bootstrap is seeded
    assert "unpaired, left out: 0 in the predictions, 1 in --against" in format_comparison(result)


def test_a_clear_difference_has_a_small_p_and_an_interval_away_from_zero():
    a = [_line(f"q{i}", "yes-answer", "yes-answer") for i in range(30)]
    b = [_line(f"q{i}", "yes-answer" if i < 5 else "no", "yes-answer") for i in range(30)]
    [pair] = compare(a, b)["pairs"]
    assert (pair.only_a, pair.only_b) == (25, 0) and pair.p_value < 1e-6
    assert pair.f1_low > 50 and pair.em_delta == pytest.approx(100 * 25 / 30)


def test_each_dataset_and_mode_apart_and_overall_where_there_are_several():
    a = [_line("h1", "x", "x", "hotpotqa"), _line("s1", "y", "y", "synth"), _line("h1", "z", "x", "hotpotqa", "rag")]
    b = [_line("h1", "w", "x", "hotpotqa"), _line("s1", "y", "y", "synth"), _line("h1", "x", "x", "hotpotqa", "rag")]
    pairs = {(p.mode, p.dataset): p for p in compare(a, b)["pairs"]}
    assert set(pairs) == {("regrad", "hotpotqa"), ("regrad", "synth"), ("regrad", "overall"), ("rag", "hotpotqa")}
    assert pairs[("regrad", "overall")].n == 2 and pairs[("regrad", "overall")].only_a == 1
    assert pairs[("rag", "hotpotqa")].only_b == 1


def test_lines_that_cannot_be_paired_are_refused_in_words():
    line = _line("q", "a", "a")
    with pytest.raises(InputFileError, match="b.jsonl: prediction 1 has no `id`"):
        compare([line], [{k: v for k, v in line.items() if k != "id"}], names=("a.jsonl", "b.jsonl"))
    with pytest.raises(InputFileError, match="a.jsonl: prediction 2 repeats id 'q' in mode 'regrad'"):
        compare([line, line], [line], names=("a.jsonl", "b.jsonl"))
    with pytest.raises(UsageError, match="share no question"):
        compare([line], [_line("other", "a", "a")])


def test_score_against_prints_the_paired_table_and_writes_it_to_scores_json(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(_line(f"q{i}", "v", "v")) + "\n" for i in range(4)))
    b.write_text("".join(json.dumps(_line(f"q{i}", "v" if i < 2 else "w", "v")) + "\n" for i in range(4)))
    assert main(["score", str(a), "--against", str(b), "--output", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert f"A = {a}, B = {b}" in out and "A only" in out
    paired = json.loads((tmp_path / "s.json").read_text())["paired"]
    assert paired["against"] == str(b) and paired["unpaired"] == {"a": 0, "b": 0}
    [row] = paired["pairs"]
    assert (row["n"], row["only_a"], row["only_b"], row["changed"], row["em_delta"]) == (4, 2, 0, 2, 50.0)
    # without --against the scores file has no `paired`, as before
    assert main(["score", str(a), "--output", str(tmp_path / "plain.json")]) == 0
    assert "paired" not in json.loads((tmp_path / "plain.json").read_text())


def test_score_against_a_file_without_ids_exits_3_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(_line("q", "v", "v")) + "\n")
    b.write_text(json.dumps({k: v for k, v in _line("q", "v", "v").items() if k != "id"}) + "\n")
    assert main(["score", str(a), "--against", str(b), "--output", str(tmp_path / "s.json")]) == 3
    assert f"{b}: prediction 1 has no `id`" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
