"""Batch evaluation: send augmented questions to the service (HTTP) or to an in-process engine,
write one prediction per line and score them (EM / F1 / precision / recall per dataset and mode).

Over HTTP, `concurrency` requests are in flight at once (the server micro-batches them); a 503 is
retried after its `Retry-After`, a connection error with capped backoff. A request the server
refuses (422) is recorded as an error for that item, scored 0, and the run goes on.

Example:
    records = load_records(["data_aug/hotpotqa/dev.jsonl"], limit=100)
    result = evaluate_http("http://127.0.0.1:8000", records, modes=["regrad", "rag"])
    write_predictions("predictions.jsonl", result.predictions)
    print(format_mode_table(result.tables))
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.composition import Composition
from engine.modes import MODE_NAMES
from offline_tools.datasets.augmented import AugmentedRecord, read_augmented
from offline_tools.errors import ExitStatus, RegradError, UsageError
from offline_tools.evaluation.metrics import Scores, ScoreTable, aggregate, score
from offline_tools.files import atomic_text

__all__ = [
    "MODES",
    "EvalJob",
    "EvaluationResult",
    "ServerError",
    "load_records",
    "answer_body",
    "evaluate_http",
    "evaluate_in_process",
    "write_predictions",
    "format_mode_table",
]

# `regrad_shift` (the --shift control of the authors' research code) is `regrad` with the passages retrieved for
# *another* question of the same file: the server is sent that question as `retrieval_query`.
# It must stay near closed-book: any gain above that is a generic effect of updating, not knowledge.
SHIFT_MODE = "regrad_shift"
MODES = (*MODE_NAMES, SHIFT_MODE)  # the engine's modes, plus the evaluation's control


class ServerError(RegradError):
    """The server cannot be used: unreachable after all retries, or it refuses our credentials."""

    exit_status = ExitStatus.UNAVAILABLE


@dataclass(frozen=True)
class EvalJob:
    """One (question, mode) to answer; `index` is its position in the output."""

    index: int
    record: AugmentedRecord
    mode: str
    shift_query: str | None = None  # regrad_shift: the other question whose passages are applied


@dataclass
class EvaluationResult:
    """Predictions in job order (record-major, then mode) and a score table per mode."""

    predictions: list[dict[str, Any]]
    tables: dict[str, ScoreTable]
    errors: int = 0
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def load_records(paths: Sequence[str | Path], limit: int | None = None) -> list[AugmentedRecord]:
    """Records of each augmented file, the first `limit` of each when given."""
    records: list[AugmentedRecord] = []
    for path in paths:
        records.extend(itertools.islice(read_augmented(path), limit))
    return records


def make_jobs(records: Sequence[AugmentedRecord], modes: Sequence[str]) -> list[EvalJob]:
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise UsageError(f"unknown mode(s) {unknown}; use {', '.join(MODES)} or all")
    if SHIFT_MODE in modes and len(records) < 2:
        raise UsageError("mode regrad_shift applies another question's passages: it needs at least 2 questions")
    shifted = shift_partners(records) if SHIFT_MODE in modes else {}
    pairs = [(i, record, mode) for i, record in enumerate(records) for mode in modes]
    return [EvalJob(n, record, mode, records[shifted[i]].question if mode == SHIFT_MODE else None)
            for n, (i, record, mode) in enumerate(pairs)]


def shift_partners(records: Sequence[AugmentedRecord]) -> dict[int, int]:
    """For each record, the nearest earlier record (cyclically, as the reference's i − 1) whose
    retrieved passages share none with it, so the applied gradients hold none of its passages;
    plain i − 1 when no such record exists (e.g. records without stored passages)."""
    n = len(records)
    ids = [{p.id for p in record.passages} for record in records]
    return {i: next((j for j in ((i - d) % n for d in range(1, n)) if ids[i] and not ids[i] & ids[j]), (i - 1) % n)
            for i in range(n)}


def answer_body(record: AugmentedRecord, mode: str, *, top_k: int = 3, gamma: float = 1.0,
                max_new_tokens: int = 20, shift_query: str | None = None,
                composition: str | None = None, stop_bias: float | None = None,
                beams: int | None = None) -> dict[str, Any]:
    """The POST /answer body for one record (`regrad_shift`: `regrad` retrieving for `shift_query`;
    `composition`: `sum`, `softmax` or `softmax:T`, or None for the server's default; `stop_bias`: a
    number, or None for the server's default; `beams`: the beam width, or None for the server's default)."""
    body: dict[str, Any] = {
        "question": record.question,
        "mode": "regrad" if mode == SHIFT_MODE else mode,
        "top_k": top_k,
        "gamma": gamma,
        "answer_type": record.answer_type,
        "max_new_tokens": max_new_tokens,
    }
    if record.answer_type == "choice":
        body["choices"] = list(record.choices or [])
    if composition is not None:
        body["composition"] = composition
    if stop_bias is not None:
        body["stop_bias"] = stop_bias
    if beams is not None:
        body["beams"] = beams
    if mode == SHIFT_MODE:
        if not shift_query:
            raise UsageError("mode regrad_shift needs the other question (shift_query)")
        body["retrieval_query"] = shift_query
    return body


def _prediction(job: EvalJob, response: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    record = job.record
    answer = (response or {}).get("answer", "")
    scores = score(answer, record.answers, record.answer_type, record.choices)
    line = {
        "id": record.id,
        "dataset": record.dataset,
        "mode": job.mode,
        "question": record.question,
        "answer": answer,
        "gold": list(record.answers),
        "answer_type": record.answer_type,
        **({"choices": list(record.choices)} if record.choices else {}),
        **({"shift_query": job.shift_query} if job.shift_query else {}),
        "scores": {"em": scores.em, "f1": scores.f1, "precision": scores.precision, "recall": scores.recall},
        "passages": (response or {}).get("passages", []),
        **({"composition": response["composition"]} if (response or {}).get("composition") else {}),
        "timings_ms": (response or {}).get("timings_ms", {}),
    }
    if error is not None:
        line["error"] = error
    return line


def _result(jobs: Sequence[EvalJob], predictions: list[dict[str, Any]], elapsed_s: float) -> EvaluationResult:
    tables: dict[str, ScoreTable] = {}
    for mode in dict.fromkeys(job.mode for job in jobs):
        items = []
        for p in predictions:
            if p["mode"] == mode:
                s = p["scores"]
                items.append((p["dataset"], Scores(s["em"], s["f1"], s["precision"], s["recall"])))
        tables[mode] = aggregate(items)
    errors = sum(1 for p in predictions if "error" in p)
    return EvaluationResult(predictions, tables, errors=errors, elapsed_s=elapsed_s)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluating", unit=" q", file=sys.stderr, disable=not enabled, mininterval=0.5)


# ------------------------------------------------------------------------------------------- HTTP


async def _post_with_retries(
    client, body: dict[str, Any], *, max_retries: int, max_wait_s: float
) -> tuple[dict[str, Any] | None, str | None]:
    """(response JSON, None) or (None, error) for an item the server refused; raises ServerError
    when the server stays unavailable."""
    import httpx

    last_problem = ""
    for attempt in range(max_retries + 1):
        try:
            response = await client.post("/answer", json=body)
        except (httpx.TransportError, httpx.TimeoutException) as error:
            last_problem = f"{type(error).__name__}: {error}"
            wait_s = min(max_wait_s, 0.5 * 2**attempt) * (0.5 + random.random() / 2)
        else:
            if response.status_code == 200:
                return response.json(), None
            if response.status_code == 401:
                raise ServerError(
                    f"{client.base_url} refused the API key (401); pass --api-key or set REGRAD_API_KEY"
                )
            if response.status_code == 503:
                last_problem = f"503: {response.text[:200]}"
                try:
                    wait_s = float(response.headers.get("Retry-After", 1))
                except ValueError:
                    wait_s = 1.0
                wait_s = min(max_wait_s, max(0.1, wait_s))
            elif response.status_code in (404, 405):
                raise ServerError(
                    f"{client.base_url}/answer answered {response.status_code}: not a regrad server? "
                    "check --url"
                )
            else:  # 422 and other refusals concern this item only
                return None, f"{response.status_code}: {response.text[:500]}"
        if attempt < max_retries:
            await asyncio.sleep(wait_s)
    raise ServerError(
        f"{client.base_url} stayed unavailable after {max_retries + 1} tries ({last_problem}); "
        "check that `regrad serve` is running and ready (GET /readyz), or raise --retries"
    )


async def _evaluate_http_async(url: str, jobs: Sequence[EvalJob], body_of: Callable[[EvalJob], dict],
                               *, concurrency: int, api_key: str | None, timeout_s: float, max_retries: int,
                               max_wait_s: float, progress: bool) -> list[dict[str, Any]]:
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    predictions: list[dict[str, Any] | None] = [None] * len(jobs)
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s,
                                 limits=limits) as client:
        with _progress(len(jobs), progress) as bar:

            async def one(job: EvalJob) -> None:
                async with semaphore:
                    response, error = await _post_with_retries(
                        client, body_of(job), max_retries=max_retries, max_wait_s=max_wait_s
                    )
                predictions[job.index] = _prediction(job, response, error)
                bar.update(1)

            tasks = [asyncio.create_task(one(job)) for job in jobs]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
    return [p for p in predictions if p is not None]


def evaluate_http(
    url: str,
    records: Sequence[AugmentedRecord],
    *,
    modes: Sequence[str] = ("regrad",),
    concurrency: int = 8,
    top_k: int = 3,
    gamma: float = 1.0,
    max_new_tokens: int = 20,
    composition: str | None = None,
    stop_bias: float | None = None,
    beams: int | None = None,
    api_key: str | None = None,
    timeout_s: float = 300.0,
    max_retries: int = 8,
    max_wait_s: float = 30.0,
    progress: bool = True,
) -> EvaluationResult:
    """Answer every (record, mode) through a running service and score the answers.

    Args:
        url: the service base URL, e.g. `http://127.0.0.1:8000`.
        records: augmented records (their own passages are not sent: the server retrieves).
        modes: any of MODES (regrad_shift: the shift control).
        concurrency: requests in flight at once.
        top_k, gamma, max_new_tokens: sent with every request.
        composition: `sum`, `softmax` or `softmax:T`, sent with every request; None = the server's default.
        stop_bias: the bias on ending an answer after its first token, sent with every request; None = the
            server's default.
        beams: beam search's width (1: greedy), sent with every request; None = the server's default.
        api_key: sent as `X-API-Key` when the server requires one.
        timeout_s: per-request timeout.
        max_retries: retries per request on 503 / connection errors before giving up (ServerError).
        max_wait_s: cap on one wait between retries (Retry-After is honoured up to it).
        progress: tqdm bar on stderr.

    Returns:
        An `EvaluationResult` (predictions in input order, a ScoreTable per mode).
    """
    if concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {concurrency}")
    _check_composition(composition)
    jobs = make_jobs(records, modes)

    def body_of(job: EvalJob) -> dict:
        return answer_body(job.record, job.mode, top_k=top_k, gamma=gamma, max_new_tokens=max_new_tokens,
                           shift_query=job.shift_query, composition=composition, stop_bias=stop_bias,
                           beams=beams)

    started_s = time.perf_counter()
    predictions = asyncio.run(_evaluate_http_async(
        url, jobs, body_of, concurrency=concurrency, api_key=api_key, timeout_s=timeout_s,
        max_retries=max_retries, max_wait_s=max_wait_s, progress=progress,
    ))
    return _result(jobs, predictions, time.perf_counter() - started_s)


# ------------------------------------------------------------------------------------- in-process


def evaluate_in_process(
    engine_or_config: Any,
    records: Sequence[AugmentedRecord],
    *,
    modes: Sequence[str] = ("regrad",),
    batch_size: int | None = None,
    top_k: int = 3,
    gamma: float = 1.0,
    max_new_tokens: int = 20,
    composition: str | None = None,
    stop_bias: float | None = None,
    beams: int | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """The same evaluation without a server: the library engine, built here, answers in batches.

    Args:
        engine_or_config: an `engine.Engine` (used, not closed) or an `engine.EngineConfig` (an engine
            is built from it and closed at the end).
        batch_size: questions per engine batch (default 8, the service's default max_batch).
        Other arguments: as `evaluate_http`.
    """
    from engine import EngineConfig, Question
    from engine.core import Engine

    combination = _check_composition(composition)
    jobs = make_jobs(records, modes)
    owned = isinstance(engine_or_config, EngineConfig)
    engine = Engine.from_config(engine_or_config) if owned else engine_or_config
    size = batch_size or 8
    started_s = time.perf_counter()
    predictions: list[dict[str, Any] | None] = [None] * len(jobs)
    try:
        with _progress(len(jobs), progress) as bar:
            for start in range(0, len(jobs), size):
                chunk = jobs[start : start + size]
                requests, valid = [], []
                for job in chunk:
                    body = answer_body(job.record, job.mode, top_k=top_k, gamma=gamma,
                                       max_new_tokens=max_new_tokens, shift_query=job.shift_query,
                                       stop_bias=stop_bias, beams=beams)
                    try:
                        requests.append(Question(**{**body, "choices": tuple(body.get("choices") or ()) or None,
                                                    "composition": combination}))
                        valid.append(job)
                    except ValueError as error:  # what the server would refuse with 422
                        predictions[job.index] = _prediction(job, None, f"invalid: {error}")
                outcomes = engine.answer_outcomes(requests) if requests else []
                for job, outcome in zip(valid, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        predictions[job.index] = _prediction(job, None, f"{type(outcome).__name__}: {outcome}")
                    else:
                        predictions[job.index] = _prediction(job, asdict(outcome), None)
                bar.update(len(chunk))
    finally:
        if owned:
            engine.close()
    done = [p for p in predictions if p is not None]
    return _result(jobs, done, time.perf_counter() - started_s)


def _check_composition(composition: str | None) -> Composition | None:
    """The parsed `--composition`, or a UsageError in words (before any question is sent)."""
    if composition is None:
        return None
    try:
        return Composition.parse(composition)
    except ValueError as error:
        raise UsageError(f"--composition {composition}: {error}") from None


# ---------------------------------------------------------------------------------------- output


def write_predictions(path: str | Path, predictions: Iterable[dict[str, Any]]) -> int:
    """Write predictions as JSON lines, atomically (temp file, then rename). Returns the count."""
    count = 0
    with atomic_text(path) as handle:
        for prediction in predictions:
            handle.write(json.dumps(prediction, ensure_ascii=False) + "\n")
            count += 1
    return count


def format_mode_table(tables: dict[str, ScoreTable]) -> str:
    """One fixed-width table, a block of rows per mode: each dataset, then overall (micro; and macro
    when there are several datasets). Scores in 0..100."""
    rows: list[tuple[str, str, Any]] = []
    for mode, table in tables.items():
        if len(table.per_dataset) > 1:
            rows += [(mode, name, scores) for name, scores in table.per_dataset.items()]
            rows.append((mode, "overall (micro)", table.overall_micro))
            rows.append((mode, "overall (macro)", table.overall_macro))
        else:
            name = next(iter(table.per_dataset), "overall")
            rows.append((mode, name, table.overall_micro))
    mode_width = max(len("mode"), *(len(r[0]) for r in rows)) if rows else 4
    name_width = max(len("dataset"), *(len(r[1]) for r in rows)) if rows else 7
    header = (f"{'mode':<{mode_width}}  {'dataset':<{name_width}}  {'n':>6}  {'EM':>6}  {'F1':>6}  "
              f"{'prec':>6}  {'recall':>6}")
    lines = [header, "-" * len(header)]
    for mode, name, s in rows:
        lines.append(f"{mode:<{mode_width}}  {name:<{name_width}}  {s.n:>6}  {s.em:>6.2f}  {s.f1:>6.2f}  "
                     f"{s.precision:>6.2f}  {s.recall:>6.2f}")
    return "\n".join(lines)

