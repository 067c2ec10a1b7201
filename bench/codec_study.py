"""Which store codec keeps the answers at fewer bytes: candidate codecs on real gradients of a learner.

Reads the stored gradients of the top-k passages of each question of augmented files from a bf16 store
(the reference), runs every candidate through encode -> decode, and reports per candidate:
  - bytes per passage (the encoding's size for this layout; for store codecs, `Codec.row_bytes`);
  - the relative error and cosine of single rows, and of each question's *weighted top-k sum* (the
    vector the engine applies: softmax weights of the served composition over the retrieval scores),
    against the bf16 reference; for the sum, also split into the LoRA A and B tensors.
With `--eval`, it also answers the questions in-process under the chosen candidates (and bf16), one
engine, the same subset: each candidate's store sum is its decoded rows, weighted (the real store path
for store codecs: `--eval` builds a store with that codec from the reference rows).

    python bench/codec_study.py --store artifacts/demo/store-3942d4ba0172 \\
        --data artifacts/demo/data_aug/synth/test.jsonl --data artifacts/demo/data_aug/hotpotqa/dev.jsonl \\
        --limit 60 --limit 40 --output codec_study.json
    python bench/codec_study.py ... --codec none --index artifacts/demo/index \\
        --eval bf16 --eval store:lowrank4 --eval lowrank3/int8 --output answers.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

K = 3  # the service's top-k

Layout = list[dict]
RoundTrip = Callable[[torch.Tensor, Layout], tuple[torch.Tensor, int]]  # (decoded [D] float32, bytes)


def _tensors(layout: Layout):
    for entry in layout:
        rows, cols = entry["shape"]
        yield entry["offset"], rows, cols


# ----------------------------------------------------------------------------------------- candidates


def block_quant(bits: int, block: int, scale_bytes: int = 4) -> RoundTrip:
    """Symmetric uniform quantizer, `bits` per value, one scale per block of `block` values.
    bits >= 3: levels -L..L with s = absmax / L (L = 2^(bits-1) - 1, as int8).
    bits = 2: the 4 levels s * {-1.5, -0.5, 0.5, 1.5}, s = rms * 0.9957 (the MSE-best step for a
    Gaussian block). bits = 1: sign * mean |x| of the block."""

    def run(x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, int]:
        d = x.numel()
        nb = -(-d // block)
        padded = torch.zeros(nb * block)
        padded[:d] = x
        b = padded.view(nb, block)
        if bits == 1:
            s = b.abs().mean(dim=1, keepdim=True)
            y = torch.sign(b) * s
        elif bits == 2:
            s = b.pow(2).mean(dim=1, keepdim=True).sqrt() * 0.9957
            s = torch.where(s > 0, s, torch.ones_like(s))
            q = torch.floor(b / s).clamp(-2, 1)  # -2,-1,0,1 -> centre +0.5
            y = (q + 0.5) * s
        else:
            levels = 2 ** (bits - 1) - 1
            s = b.abs().amax(dim=1, keepdim=True) / levels
            s = torch.where(s > 0, s, torch.ones_like(s))
            y = torch.round(b / s).clamp(-levels, levels) * s
        return y.reshape(-1)[:d], math.ceil(d * bits / 8) + nb * scale_bytes

    return run


def top_fraction(fraction: float, index_bytes: int | None) -> RoundTrip:
    """Per tensor, keep the `fraction` largest |x| as int8 with one float32 scale per tensor; the rest is 0.
    Positions are a bitmask (1 bit per value) when `index_bytes` is None, else explicit indices."""

    def run(x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, int]:
        out = torch.zeros_like(x)
        kept = 0
        for off, rows, cols in _tensors(layout):
            t = x[off : off + rows * cols]
            k = max(1, int(round(fraction * t.numel())))
            idx = t.abs().topk(k).indices
            v = t[idx]
            s = v.abs().max() / 127
            out[off + idx] = torch.round(v / s) * s if s > 0 else v
            kept += k
        positions = math.ceil(x.numel() / 8) if index_bytes is None else kept * index_bytes
        return out, positions + kept + 4 * len(layout)

    return run


def low_rank(rank: int, factor_bits: int) -> RoundTrip:
    """Per LoRA tensor [m, n], its best rank-`rank` approximation U diag(S) V^T, stored as the factors
    (U S) [m, rank] and V [rank, n]: bf16 (factor_bits 16), or `factor_bits`-bit integers (packed) with one
    float32 scale per factor row/column."""

    def q(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
        if factor_bits == 16:
            return t.to(torch.bfloat16).float(), t.numel() * 2
        levels = 2 ** (factor_bits - 1) - 1
        s = t.abs().amax(dim=dim, keepdim=True) / levels
        s = torch.where(s > 0, s, torch.ones_like(s))
        return torch.round(t / s) * s, math.ceil(t.numel() * factor_bits / 8) + s.numel() * 4

    def run(x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, int]:
        out = torch.empty_like(x)
        total = 0
        for off, rows, cols in _tensors(layout):
            m = x[off : off + rows * cols].view(rows, cols)
            u, s, vh = torch.linalg.svd(m, full_matrices=False)
            a, na = q(u[:, :rank] * s[:rank], 0)  # (rows, r): one scale per column
            b, nb = q(vh[:rank], 1)  # (r, cols): one scale per row
            out[off : off + rows * cols] = (a @ b).reshape(-1)
            total += na + nb
        return out, total

    return run


def adaptive_low_rank(budget: int) -> RoundTrip:
    """Like low_rank(r, 8), but each row spends `budget` bytes where its energy is: the rank components of
    all tensors, taken in order of sigma^2 per byte (a component of [m, n] costs m + n int8 values and one
    float32 scale), plus one byte per tensor for its rank."""

    def run(x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, int]:
        svds, gains = [], []
        for t, (off, rows, cols) in enumerate(_tensors(layout)):
            u, s, vh = torch.linalg.svd(x[off : off + rows * cols].view(rows, cols), full_matrices=False)
            svds.append((u, s, vh))
            cost = rows + cols + 4
            gains += [(float(s[j]) ** 2 / cost, cost, t) for j in range(s.numel())]
        ranks = [0] * len(svds)
        spent = len(svds)  # the rank table
        for _, cost, t in sorted(gains, reverse=True):
            if spent + cost <= budget:
                ranks[t] += 1
                spent += cost
        out = torch.zeros_like(x)
        for (off, rows, cols), (u, s, vh), r in zip(_tensors(layout), svds, ranks, strict=True):
            if r:
                p, q = u[:, :r] * s[:r], vh[:r]
                ps = _nonzero_scale(p.abs().amax(dim=0, keepdim=True) / 127)
                qs = _nonzero_scale(q.abs().amax(dim=1, keepdim=True) / 127)
                out[off : off + rows * cols] = ((torch.round(p / ps) * ps) @ (torch.round(q / qs) * qs)).reshape(-1)
        return out, spent

    return run


def _nonzero_scale(s: torch.Tensor) -> torch.Tensor:
    return torch.where(s > 0, s, torch.ones_like(s))


def store_codec(name: str) -> RoundTrip:
    """A codec of the store (`gradient_store.CODECS`), bound to the row's layout."""
    from gradient_store import get_codec

    def run(x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, int]:
        codec = get_codec(name, layout=layout)
        if codec.name == "bf16":
            return x.clone(), codec.row_bytes(x.numel())
        grads, scales = codec.encode(x[None])
        return codec.decode(grads[0], None if scales is None else scales[0]), codec.row_bytes(x.numel())

    return run


CANDIDATES: dict[str, Callable[[], RoundTrip]] = {
    "bf16": lambda: store_codec("bf16"),
    "int8": lambda: store_codec("int8"),
    "int4/b64": lambda: block_quant(4, 64),
    "int2/b256": lambda: block_quant(2, 256),
    "sign/b64": lambda: block_quant(1, 64),
    "top10%+bitmask": lambda: top_fraction(0.10, None),
    "top4%+idx32": lambda: top_fraction(0.04, 4),
    "lowrank2/bf16": lambda: low_rank(2, 16),
    "lowrank3/int8": lambda: low_rank(3, 8),
    "lowrank4/int8": lambda: low_rank(4, 8),
    "lowrank4": lambda: store_codec("lowrank4"),
    "lowrank8/int8": lambda: low_rank(8, 8),
    "lowrank5/int6": lambda: low_rank(5, 6),
    "adaptive/int8": lambda: adaptive_low_rank(568_128),
    "lowrank8/int4": lambda: low_rank(8, 4),
}


# ----------------------------------------------------------------------------------------- measuring


def _weights(scores: list[float]) -> list[float]:
    """The served composition's weights (the shipped learner names none: the default, softmax:0.4)."""
    from engine.composition import DEFAULT_COMPOSITION

    return DEFAULT_COMPOSITION.weights(scores)


def _ab_mask(layout: Layout, dim: int) -> torch.Tensor:
    mask = torch.zeros(dim, dtype=torch.bool)
    for entry in layout:
        if entry["name"].endswith("lora_A"):
            rows, cols = entry["shape"]
            mask[entry["offset"] : entry["offset"] + rows * cols] = True
    return mask


def _rel(err: torch.Tensor, ref: torch.Tensor) -> float:
    return (err.norm() / ref.norm()).item()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0).item()


def study(store, questions: list[dict], names: list[str]) -> list[dict]:
    ids = sorted({p["id"] for q in questions for p in q["passages"][:K]})
    started = time.perf_counter()
    ref = store.get(ids, on_corrupt="raise")
    print(f"read {len(ids)} rows in {time.perf_counter() - started:.1f} s", flush=True)
    layout = store.layout
    mask_a = _ab_mask(layout, store.dim)
    rows = []
    for name in names:
        started = time.perf_counter()
        codec = CANDIDATES[name]()
        decoded, nbytes = {}, 0
        row_rel, row_cos = [], []
        for pid in ids:
            decoded[pid], nbytes = codec(ref[pid], layout)
            row_rel.append(_rel(decoded[pid] - ref[pid], ref[pid]))
            row_cos.append(_cos(decoded[pid], ref[pid]))
        sum_rel, sum_cos, rel_a, rel_b = [], [], [], []
        for q in questions:
            top = q["passages"][:K]
            w = _weights([p["score"] for p in top])
            exact = sum(wi * ref[p["id"]] for wi, p in zip(w, top, strict=True))
            approx = sum(wi * decoded[p["id"]] for wi, p in zip(w, top, strict=True))
            err = approx - exact
            sum_rel.append(_rel(err, exact))
            sum_cos.append(_cos(approx, exact))
            rel_a.append(_rel(err[mask_a], exact[mask_a]))
            rel_b.append(_rel(err[~mask_a], exact[~mask_a]))
        mean = lambda v: round(sum(v) / len(v), 4)  # noqa: E731
        row = {"codec": name, "bytes_per_passage": nbytes, "row_rel_err": mean(row_rel), "row_cos": mean(row_cos),
               "sum_rel_err": mean(sum_rel), "sum_rel_err_max": round(max(sum_rel), 4), "sum_cos": mean(sum_cos),
               "sum_rel_err_A": mean(rel_a), "sum_rel_err_B": mean(rel_b)}
        rows.append(row)
        print(f"{name:<16} {nbytes:>10,} B  row rel {row['row_rel_err']:.4f} cos {row['row_cos']:.4f}  "
              f"sum rel {row['sum_rel_err']:.4f} (max {row['sum_rel_err_max']:.4f}, A {row['sum_rel_err_A']:.4f}, "
              f"B {row['sum_rel_err_B']:.4f}) cos {row['sum_cos']:.4f}  ({time.perf_counter() - started:.0f} s)",
              flush=True)
    return rows


# ----------------------------------------------------------------------------------------- answering


class RoundTripStore:
    """The reference store as a candidate would serve it: `sum` adds each row's encode -> decode, weighted.
    Everything else is the reference store's."""

    def __init__(self, store, codec: RoundTrip) -> None:
        self._store = store
        self._codec = codec

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def sum(self, ids, on_corrupt="missing", weights=None):
        from gradient_store.store import SumResult

        ids = list(ids)
        weights = [1.0] * len(ids) if weights is None else list(weights)
        rows = self._store.get(ids, on_corrupt)
        vector, found, missing = torch.zeros(self._store.dim), [], []
        for pid, weight in zip(ids, weights, strict=True):
            if pid in rows:
                vector.add_(self._codec(rows[pid], self._store.layout)[0], alpha=weight)
                found.append(pid)
            else:
                missing.append(pid)
        return SumResult(vector, found, missing)


def build_store(ref, ids: list[str], codec: str, path: Path):
    """A real store with `codec` holding the reference rows of `ids` (decoded, then encoded again)."""
    from gradient_store import GradientStore

    store = GradientStore.create(path, layout=ref.layout, fingerprint=ref.fingerprint, codec=codec)
    with store.writer() as writer:
        for start in range(0, len(ids), 16):
            chunk = ids[start : start + 16]
            rows = ref.get(chunk, on_corrupt="raise")
            writer.append(chunk, torch.stack([rows[pid] for pid in chunk]))
    return store


def answer(args, files: list[tuple[str, list]], names: list[str], save: Callable[[list[dict]], None]) -> list[dict]:
    """EM/F1 at k = 3 under each candidate (`store:NAME`: a real store with codec NAME), one engine; the
    rows hold each question's answer too (`changed`: answers that differ from the first candidate's).
    `save(rows)` is called after each file, so a long run keeps what it finished."""
    import tempfile

    from engine import EngineConfig
    from engine.core import Engine
    from offline_tools.evaluation.evaluate import evaluate_in_process, load_records

    engine = Engine.from_config(EngineConfig(checkpoint=Path(args.checkpoint), index=args.index,
                                             store=Path(args.store), torch_threads=1))
    ref = engine.store
    stores = {}
    rows = []
    try:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            # file by file, every candidate on it: a cut-short run still holds paired results
            for number, (path, questions) in enumerate(files):
                records = load_records([path], limit=args.skip + len(questions))[args.skip :]
                for name in names:
                    if name.startswith("store:"):  # the file's passages, re-encoded with that codec
                        started = time.perf_counter()
                        ids = sorted({p["id"] for q in questions for p in q["passages"][:K]})
                        folder = Path(tmp) / f"{name.replace(':', '-')}-{number}"
                        stores[name] = build_store(ref, ids, name.split(":", 1)[1], folder)
                        print(f"built {name} ({len(ids)} rows) in {time.perf_counter() - started:.0f} s", flush=True)
                    elif name not in stores:
                        stores[name] = ref if name == "bf16" else RoundTripStore(ref, CANDIDATES[name]())
                    started = time.perf_counter()
                    engine.store = stores[name]
                    result = evaluate_in_process(engine, records, modes=["regrad"], top_k=K, progress=False)
                    s = result.tables["regrad"].overall_micro
                    missing = sum(p.get("gradient") == "missing" for r in result.predictions for p in r["passages"])
                    answers = [p["answer"] for p in result.predictions]
                    first = next((r for r in rows if r["data"] == path), None)
                    changed = sum(a != b for a, b in zip(answers, first["answers"], strict=True)) if first else 0
                    rows.append({"codec": name, "data": path, "n": s.n, "em": round(s.em, 2), "f1": round(s.f1, 2),
                                 "changed": changed, "missing_gradients": missing, "errors": result.errors,
                                 "seconds": round(time.perf_counter() - started), "answers": answers,
                                 "f1s": [round(p["scores"]["f1"], 4) for p in result.predictions]})
                    save(rows)
                    print(f"{name:<16} {Path(path).parent.name}/{Path(path).name:<12} n={s.n:<4} EM {s.em:6.2f}  "
                          f"F1 {s.f1:6.2f}  changed {changed}  missing {missing}  "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
                    if name.startswith("store:"):
                        stores.pop(name).close()
    finally:
        engine.store = ref
        for store in stores.values():
            if store is not ref and not isinstance(store, RoundTripStore):
                store.close()
        engine.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the reference store (bf16) holding the passages' rows")
    parser.add_argument("--data", action="append", required=True, help="augmented file (repeatable)")
    parser.add_argument("--limit", type=int, action="append",
                        help="first N questions of each file (once, or once per --data)")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N questions of each file")
    parser.add_argument("--codec", action="append", help=f"candidates (default all: {', '.join(CANDIDATES)})")
    parser.add_argument("--eval", action="append", default=[],
                        help="also answer under this candidate (repeatable; `store:NAME` = a real store with codec "
                        "NAME; `bf16` = the reference store)")
    parser.add_argument("--checkpoint", default="checkpoints/regrad-smollm2-135m", help="learner folder (--eval)")
    parser.add_argument("--index", help="tantivy index folder (--eval)")
    parser.add_argument("--workdir", help="where --eval builds its stores (default: the temp folder)")
    parser.add_argument("--output", help="write the rows as JSON here")
    args = parser.parse_args(argv)

    from gradient_store import GradientStore

    torch.manual_seed(0)
    limits = args.limit or [None]
    if len(limits) == 1:
        limits = limits * len(args.data)
    files = []
    for path, limit in zip(args.data, limits, strict=True):
        with open(path) as handle:
            lines = [json.loads(line) for line in handle if line.strip()][args.skip :]
            files.append((path, lines[:limit]))
    questions = [q for _, qs in files for q in qs]
    rows = []
    if args.codec != ["none"]:
        store = GradientStore.open(args.store)
        try:
            rows = study(store, questions, args.codec or list(CANDIDATES))
        finally:
            store.close()
    def save(answers: list[dict]) -> None:
        if args.output:
            Path(args.output).write_text(json.dumps({"questions": {p: len(qs) for p, qs in files}, "rows": rows,
                                                     "answers": answers}, indent=1) + "\n")

    save([])
    if args.eval:
        answer(args, files, args.eval, save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
