"""Two predictions files on the same questions, compared question by question (`regrad score A --against B`).

A dev split of 120 questions moves by one to six answers when a learner's weights are rounded to bf16 or
the read path batches differently (docs/results.md, rule 22a's reads), so "A is 2 points above B" says
little on its own. The paired view says how many questions each got right that the other did not, and
how likely a split that large would be if neither were better:

- **McNemar's exact test** on the EM flips: of the questions exactly one of A and B gets right (`b` for
  A, `c` for B), the two-sided probability of a split at least this uneven under a fair coin,
  `min(1, 2 · P[Binomial(b + c, ½) ≤ min(b, c)])`.
- **A paired bootstrap** of the F1 difference: the questions resampled with replacement (seeded), the
  2.5th and 97.5th percentiles of the mean difference.
- **Answers changed**: how many answers differ as text at all, right or wrong (what a rounding moves).

    pairs = compare(read_predictions("a.jsonl"), read_predictions("b.jsonl"))
    print(format_comparison(pairs))

Lines pair by (`id`, `mode`); questions only one file has are counted as unpaired and left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from offline_tools.errors import InputFileError, UsageError
from offline_tools.evaluation.metrics import score_line

__all__ = ["PairedScores", "compare", "comparison_to_dict", "format_comparison", "mcnemar_exact"]

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class PairedScores:
    """A against B on `n` questions both answered (one mode, one dataset or all): scores in 0..100."""

    mode: str
    dataset: str
    n: int
    em_a: float
    em_b: float
    only_a: int              # right (EM) in A, wrong in B
    only_b: int              # right in B, wrong in A
    p_value: float           # McNemar's exact test on only_a vs only_b
    f1_a: float
    f1_b: float
    f1_low: float            # the paired bootstrap's 95 % interval of F1 A − B
    f1_high: float
    changed: int             # answers that differ as text

    @property
    def em_delta(self) -> float:
        return self.em_a - self.em_b


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: `min(1, 2 · P[Binomial(n, ½) ≤ min(only_a, only_b)])`, n their sum."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _bootstrap(differences: Sequence[float], seed: int) -> tuple[float, float]:
    import numpy as np

    values = np.asarray(differences, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _paired(mode: str, dataset: str, rows: list[tuple[dict, dict]], seed: int) -> PairedScores:
    scored = [(score_line(a), score_line(b), a.get("answer"), b.get("answer")) for a, b in rows]
    n = len(scored)
    only_a = sum(1 for sa, sb, _, _ in scored if sa.em > sb.em)
    only_b = sum(1 for sa, sb, _, _ in scored if sb.em > sa.em)
    low, high = _bootstrap([sa.f1 - sb.f1 for sa, sb, _, _ in scored], seed)
    return PairedScores(
        mode=mode, dataset=dataset, n=n,
        em_a=100 * sum(sa.em for sa, _, _, _ in scored) / n, em_b=100 * sum(sb.em for _, sb, _, _ in scored) / n,
        only_a=only_a, only_b=only_b, p_value=mcnemar_exact(only_a, only_b),
        f1_a=100 * sum(sa.f1 for sa, _, _, _ in scored) / n, f1_b=100 * sum(sb.f1 for _, sb, _, _ in scored) / n,
        f1_low=100 * low, f1_high=100 * high,
        changed=sum(1 for _, _, a, b in scored if (a or "").strip() != (b or "").strip()),
    )


def compare(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], *, seed: int = 0,
            names: tuple[str, str] = ("the predictions", "--against")) -> dict[str, Any]:
    """Pair the lines of two predictions files by (`id`, `mode`) and compare them per mode: each dataset,
    and all of them together where there are several. Returns `{"pairs": [PairedScores…], "unpaired":
    {"a": n, "b": n}}`. `InputFileError` (naming the file, from `names`) for a line without an `id` or an
    (`id`, `mode`) seen twice; `UsageError` when the files share no question."""
    def keyed(lines: Sequence[dict[str, Any]], name: str) -> dict[tuple[str, str], dict]:
        out: dict[tuple[str, str], dict] = {}
        for number, line in enumerate(lines, start=1):
            if "id" not in line:
                raise InputFileError(name, f"prediction {number} has no `id`, so it cannot be paired")
            key = (str(line["id"]), line["mode"])
            if key in out:
                raise InputFileError(name, f"prediction {number} repeats id {key[0]!r} in mode {key[1]!r}; "
                                     "pairing needs one answer per question and mode")
            out[key] = line
        return out

    left, right = keyed(a, names[0]), keyed(b, names[1])
    common = [key for key in left if key in right]
    if not common:
        raise UsageError("the two predictions files share no question (paired by id and mode)")
    by_mode: dict[str, list[tuple[dict, dict]]] = {}
    for key in common:
        by_mode.setdefault(key[1], []).append((left[key], right[key]))
    pairs: list[PairedScores] = []
    for mode, rows in by_mode.items():
        datasets: dict[str, list[tuple[dict, dict]]] = {}
        for row in rows:
            datasets.setdefault(row[0]["dataset"], []).append(row)
        pairs += [_paired(mode, name, part, seed) for name, part in datasets.items()]
        if len(datasets) > 1:
            pairs.append(_paired(mode, "overall", rows, seed))
    return {"pairs": pairs, "unpaired": {"a": len(left) - len(common), "b": len(right) - len(common)}}


def comparison_to_dict(comparison: dict[str, Any], *, against: str | None = None) -> dict[str, Any]:
    """`compare`'s result as JSON-ready data (scores.json's `paired`)."""
    return {"against": against, "unpaired": comparison["unpaired"],
            "pairs": [{**asdict(p), "em_delta": p.em_delta} for p in comparison["pairs"]]}


def format_comparison(comparison: dict[str, Any]) -> str:
    """A fixed-width table: per mode and dataset, EM of A and B, the flips each way and McNemar's p, the F1
    difference with its bootstrap interval, and the answers changed."""
    pairs: list[PairedScores] = comparison["pairs"]
    mode_width = max(len("mode"), *(len(p.mode) for p in pairs))
    name_width = max(len("dataset"), *(len(p.dataset) for p in pairs))
    header = (f"{'mode':<{mode_width}}  {'dataset':<{name_width}}  {'n':>5}  {'EM A':>6}  {'EM B':>6}  "
              f"{'A only':>6}  {'B only':>6}  {'p':>6}  {'F1 A-B [95% CI]':>22}  {'changed':>7}")
    lines = [header, "-" * len(header)]
    for p in pairs:
        interval = f"{p.f1_a - p.f1_b:+.2f} [{p.f1_low:+.2f}, {p.f1_high:+.2f}]"
        lines.append(f"{p.mode:<{mode_width}}  {p.dataset:<{name_width}}  {p.n:>5}  {p.em_a:>6.2f}  "
                     f"{p.em_b:>6.2f}  {p.only_a:>6}  {p.only_b:>6}  {p.p_value:>6.3f}  {interval:>22}  "
                     f"{p.changed:>7}")
    unpaired = comparison["unpaired"]
    if unpaired["a"] or unpaired["b"]:
        lines.append(f"unpaired, left out: {unpaired['a']} in the predictions, {unpaired['b']} in --against")
    return "\n".join(lines)
