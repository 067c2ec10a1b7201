"""`regrad encode`: per-passage gradients of a trained learner, written to a gradient store.

Passages come from augmented files (only the ones the questions need) or from a corpus file
(every passage of an index: the readers give the same stable ids as `regrad index`). They are
deduplicated by passage id, already-stored ids are skipped (so a crash or Ctrl-C resumes where
it stopped: every batch is appended atomically), and each batch is one forward/backward.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from tqdm import tqdm

from gradient_store import GradientStore
from models import Learner, format_passage, passage_gradients
from models.base import resolve_device
from offline_tools.datasets.augmented import read_augmented
from offline_tools.errors import UsageError

__all__ = [
    "EncodeArgs",
    "encode",
    "passages_from_augmented",
    "passages_from_corpus",
    "requested_passages",
    "unique_passages",
    "default_batch_size",
]


@dataclass
class EncodeArgs:
    checkpoint: str
    store: str
    passages_from: list[str]
    corpus: list[str]
    corpus_format: str = "auto"
    codec: str = "bf16"
    batch_size: int | None = None  # None: 16 on a GPU, 1 on a CPU (bench/encode_bench.py)
    top_k: int | None = None  # with --passages-from: only each question's first k passages
    device: str = "auto"
    limit: int | None = None


def passages_from_augmented(paths: Iterable[str], top_k: int | None = None) -> Iterator[tuple[str, str]]:
    """(id, formatted text) of the passages referenced by augmented files."""
    for path in paths:
        for record in read_augmented(path):
            for passage in record.passages[:top_k]:
                yield passage.id, format_passage(passage.title, passage.text)


def passages_from_corpus(paths: Iterable[str], corpus_format: str = "auto") -> Iterator[tuple[str, str]]:
    from retrieval.corpus import read_corpus

    for path in paths:
        for passage in read_corpus(path, format=corpus_format):
            yield passage.id, format_passage(passage.title, passage.text)


def requested_passages(args: EncodeArgs) -> Iterator[tuple[str, str]]:
    """(id, formatted text) of every passage `args` names, augmented files first, duplicates included."""
    if args.passages_from:
        yield from passages_from_augmented(args.passages_from, args.top_k)
    if args.corpus:
        yield from passages_from_corpus(args.corpus, args.corpus_format)


def unique_passages(
    items: Iterable[tuple[str, str]], is_stored: Callable[[str], bool]
) -> tuple[list[tuple[str, str]], int, int]:
    """`(to encode, already stored, empty)`: first occurrence of each id, minus empty and stored passages."""
    seen: set[str] = set()
    todo, already, empty = [], 0, 0
    for pid, text in items:
        if pid in seen:
            continue
        seen.add(pid)
        if not text.strip():
            empty += 1
        elif is_stored(pid):
            already += 1
        else:
            todo.append((pid, text))
    return todo, already, empty


def default_batch_size(device: str) -> int:
    # Batching pays on a GPU (12x at 16 passages on an H200) but not on a CPU, where it only adds
    # padding and memory traffic (0.7x at 8 passages on the 2-core box): see docs/benchmarks.md.
    return 16 if device.startswith("cuda") else 1


def encode(args: EncodeArgs, log=print) -> dict:
    """Encode the requested passages into `args.store`; returns counts and passages/s."""

    if not args.passages_from and not args.corpus:
        raise UsageError("nothing to encode: give --passages-from AUGMENTED.jsonl and/or --corpus FILE")
    device = resolve_device(args.device)
    learner = Learner.load(args.checkpoint, device=device)
    batch_size = args.batch_size or default_batch_size(device)
    store = GradientStore.create(
        args.store, layout=learner.layout.to_json(), fingerprint=learner.fingerprint, codec=args.codec, exist_ok=True
    )
    todo, already, empty = unique_passages(requested_passages(args), store.contains)
    if args.limit is not None:
        todo = todo[: args.limit]
    log(f"{len(todo)} passages to encode ({already} already in {args.store}, {empty} empty skipped)")
    started = time.perf_counter()
    done = 0
    # One writer for the whole run, committed whenever a full shard's worth of rows is pending:
    # full-size shards, and a crash or Ctrl-C loses at most the uncommitted rows (resume skips the rest).
    with tqdm(total=len(todo), desc="encode", unit="passage") as bar, store.writer(on_duplicate="skip") as writer:
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                grads = passage_gradients(learner, [text for _, text in chunk], batch_size=batch_size)
                writer.append([pid for pid, _ in chunk], grads)
                if writer.pending >= store.rows_per_shard:
                    writer.commit()
                done += len(chunk)
                bar.update(len(chunk))
                bar.set_postfix(rate=f"{done / max(1e-9, time.perf_counter() - started):.1f}/s")
        except KeyboardInterrupt:
            writer.commit()  # keep every finished batch: the next run resumes after it
            raise
    elapsed = time.perf_counter() - started
    total = len(store)
    store.close()
    return {
        "encoded": done,
        "already_stored": already,
        "empty_skipped": empty,
        "store_rows": total,
        "seconds": elapsed,
        "passages_per_s": done / elapsed if elapsed > 0 else 0.0,
    }
