"""`regrad augment` as a library function: retrieve top-k passages for each question, append them.

The reference retrieved one question at a time, padded missing hits with "" (NaN gradients at
encode time), and wrote one JSON array at the very end, so a crash lost everything. Here the
questions go to the retriever in batches (`search_many`), empty passages are dropped (a question
may end up with fewer than k, never with padding), and every record is appended and flushed as
soon as its batch returns: a rerun skips the ids already in the file.

With `answerable`, a question is written only if one of its gold answers occurs, as whole words after
the metric's normalisation, in one of its kept passages: training or validation questions from a corpus
that was not built for them (2Wiki's questions over the HippoRAG corpus) keep only those their passages
can answer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from offline_tools.datasets import QARecord
from offline_tools.datasets.augmented import AugmentedPassage, AugmentedRecord, AugmentedWriter
from offline_tools.datasets.record import YES_NO_GOLDS
from offline_tools.errors import RegradError, UsageError
from offline_tools.evaluation.metrics import normalize_answer

__all__ = ["AugmentReport", "answer_in_passages", "augment_records", "default_output"]


class _Searcher(Protocol):
    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Any]]: ...


@dataclass
class AugmentReport:
    """What one `augment_records` run did.

    Args:
        output: the augmented file.
        total: questions asked for (after split and slicing).
        already_done: of those, found in the file from an earlier run and skipped.
        written: records appended by this run.
        passages: passages written by this run.
        empty_dropped: retrieved passages dropped for having no text.
        short_questions: questions written with fewer than `top_k` passages.
        repaired_bytes: size of a torn last line cut off before appending.
        unanswerable_dropped: with `answerable`, questions not written because no kept passage holds a
            gold answer (yes/no and multiple-choice questions among them); a rerun retrieves them again.
    """

    output: str
    total: int
    already_done: int
    written: int
    passages: int
    empty_dropped: int
    short_questions: int
    repaired_bytes: int
    unanswerable_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_output(dataset: str, split: str, root: str | Path = "data_aug") -> Path:
    """`data_aug/<dataset>/<split>.jsonl` (the reference's location, as JSON Lines)."""
    return Path(root) / dataset / f"{split}.jsonl"


def _passage(hit: Any) -> AugmentedPassage:
    # Any object with id/title/text/score works (retrieval.Passage in practice).
    return AugmentedPassage(id=str(hit.id), title=str(hit.title or ""), text=str(hit.text), score=float(hit.score))


def answer_in_passages(answers: Sequence[str], passages: Sequence[AugmentedPassage]) -> bool:
    """Whether a gold answer occurs as whole words in a passage's title or text, both normalised as the
    metrics normalise (a yes/no/maybe gold never does: no passage states it).

    Example:
        >>> answer_in_passages(["The Eiffel Tower"], [AugmentedPassage("p", "Paris", "the eiffel tower.", 1.0)])
        True
    """
    golds = [f" {g} " for g in map(normalize_answer, answers) if g and g not in YES_NO_GOLDS]
    texts = [f" {normalize_answer(p.title + ' ' + p.text)} " for p in passages]
    return any(gold in text for gold in golds for text in texts)


def augment_records(
    records: Sequence[QARecord],
    retriever: _Searcher,
    output: str | Path,
    top_k: int = 3,
    batch_size: int = 32,
    show_progress: bool = True,
    answerable: bool = False,
) -> AugmentReport:
    """Retrieve the top `top_k` passages of each question and append them to `output`.

    Resumable: ids already in `output` are skipped, and a torn last line (a crash mid-write)
    is cut off first. Questions are sent to the retriever `batch_size` at a time.

    Args:
        records: the questions (e.g. `load_split(...)[start:end]`).
        retriever: anything with `search_many(queries, k) -> list[list[Passage]]`.
        output: the `.jsonl` file to append to (created with its folder if missing).
        top_k: passages per question.
        batch_size: questions per `search_many` call.
        show_progress: draw a tqdm bar on stderr.
        answerable: write only short-answer questions whose gold answer is in one of their passages
            (`answer_in_passages`).

    Returns:
        An `AugmentReport`.

    Example:
        >>> retriever = open_retriever(RetrieverConfig(index="artifacts/index"))
        >>> records = load_split("hotpotqa", "data/hotpotqa/ircot_hotpotqa_dev_subsampled.jsonl", "dev")
        >>> augment_records(records, retriever, "data_aug/hotpotqa/dev.jsonl", top_k=3)
    """
    if top_k < 1:
        raise UsageError(f"--top-k is {top_k}; expected at least 1 (the reference used 3)")
    if batch_size < 1:
        raise UsageError(f"--batch-size is {batch_size}; expected at least 1")
    datasets = {record.dataset for record in records}
    with AugmentedWriter(output, dataset=next(iter(datasets)) if len(datasets) == 1 else None) as writer:
        todo = [record for record in records if record.id not in writer.done_ids]
        report = AugmentReport(
            output=str(output),
            total=len(records),
            already_done=len(records) - len(todo),
            written=0,
            passages=0,
            empty_dropped=0,
            short_questions=0,
            repaired_bytes=writer.repaired_bytes,
        )
        bar = tqdm(
            total=len(records),
            initial=report.already_done,
            desc=f"augment {Path(output).name}",
            unit="q",
            file=sys.stderr,
            disable=not show_progress,
            dynamic_ncols=True,
        )
        with bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                results = retriever.search_many([record.question for record in batch], top_k)
                if len(results) != len(batch):
                    raise RegradError(
                        f"the retriever answered {len(results)} of {len(batch)} queries; check the backend"
                    )
                for record, hits in zip(batch, results):
                    kept = [_passage(hit) for hit in list(hits)[:top_k] if str(hit.text or "").strip()]
                    if answerable and (record.answer_type != "short" or not answer_in_passages(record.answers, kept)):
                        report.unanswerable_dropped += 1
                        continue
                    report.empty_dropped += min(len(hits), top_k) - len(kept)
                    report.short_questions += len(kept) < top_k
                    report.passages += len(kept)
                    writer.write(AugmentedRecord.from_record(record, kept))
                    report.written += 1
                bar.update(len(batch))
    return report
