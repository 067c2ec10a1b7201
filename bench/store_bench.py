"""Gradient store benchmark: fetch+sum of k stored gradients against the alternatives.

Builds a store of N synthetic rows of the bundled preset's dimension (D = 760,320), then times
`store.sum(k random ids)`:
  - warm: ids drawn from a hot set that fits the LRU cache (the service's steady state);
  - cold: the LRU dropped before every call, so each row is copied out of the memory-mapped shard
    and checked against its CRC32 (the OS page cache is left alone: the box is shared);
  - uniform: ids drawn from all N rows with the LRU on (mostly misses once N rows >> cache).
Against (a) the reference's way: one `torch.save`d dict {key: {param: fp32 tensor}} loaded with
`torch.load(weights_only=True)`, then per query a sum over the k dicts; and (b) recomputing the
summed gradient with the model (`summed_gradient(learner, 3 real passages)`). It also measures the
bf16 and int8 relative reconstruction error on real gradients of the bundled model.
The last line printed is one JSON object.

    .venv/bin/python bench/store_bench.py [--rows 2000] [--no-model] [--workdir DIR] [--keep]
    .venv/bin/python bench/store_bench.py --codec bf16 --versus lowrank4 [--layout-from STORE/manifest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gradient_store import CODECS

# -- knobs -------------------------------------------------------------------------------------
ROWS = 2000  # passages in the synthetic store
DIM = 760_320  # the bundled preset's D: SmolLM2-135M, LoRA r=8 on mlp of layers 15..29
CODEC = "bf16"  # the store's default codec
K = 3  # passages summed per request (the service's top-k)
QUERIES = 300  # timed fetch+sum calls per measurement
HOT_SET = 60  # warm: ids drawn from this many passages (60 bf16 rows = 91 MB < cache)
CACHE_BYTES = 256 << 20  # the store's default LRU budget
TORCHLOAD_ROWS = 500  # reference file size in passages (fp32, ~3 MB each); figures scale to ROWS
RECOMPUTE_REPEATS = 5  # timed `summed_gradient` calls (after one warm-up)
ERROR_PASSAGES = 6  # real passages for the codec reconstruction error
PRESET = "smollm2-135m-instruct"
DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
CORPUS = "hipporag_2wikimultihopqa_corpus/2wikimultihopqa_corpus.json"
SEED = 0
# -----------------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(_percentile(ms, 0.99), 3)}


def _layout_shapes(dim: int) -> list[tuple[str, list[int]]]:
    """The bundled preset's LoRA tensors (gate/up/down A and B of layers 15..29), or one tensor for other D."""
    hidden, inter, r = 576, 1536, 8
    shapes = []
    for layer in range(15, 30):
        for module, (d_in, d_out) in (
            ("gate_proj", (hidden, inter)),
            ("up_proj", (hidden, inter)),
            ("down_proj", (inter, hidden)),
        ):
            shapes.append((f"layers.{layer}.mlp.{module}.lora_A", [r, d_in]))
            shapes.append((f"layers.{layer}.mlp.{module}.lora_B", [d_out, r]))
    if sum(a * b for _, (a, b) in shapes) != dim:
        return [("flat", [dim])]
    return shapes


def build_store(path: Path, rows: int, dim: int, codec: str, layout: list[dict] | None = None):
    from gradient_store import GradientStore

    if layout is None:
        layout, offset = [], 0
        for name, shape in _layout_shapes(dim):
            layout.append({"name": name, "shape": shape, "offset": offset})
            offset += shape[0] * (shape[1] if len(shape) > 1 else 1)
    store = GradientStore.create(path, layout=layout, fingerprint="0" * 64, codec=codec, cache_bytes=CACHE_BYTES)
    gen = torch.Generator().manual_seed(SEED)
    chunk = store.rows_per_shard  # one shard per append: the writer never holds more than one shard
    started = time.perf_counter()
    with store.writer() as w:
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            w.append([f"p{i}" for i in range(first, first + n)], torch.randn(n, dim, generator=gen) * 1e-3)
            print(f"  built {first + n}/{rows} rows", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return store, time.perf_counter() - started


def time_sums(store, id_sets: list[list[str]], drop_cache: bool, weights: list[float] | None = None) -> list[float]:
    out = []
    for ids in id_sets:
        if drop_cache:
            store.clear_cache()
        started = time.perf_counter()
        vector, found, missing = store.sum(ids, weights=weights)
        out.append(time.perf_counter() - started)
        assert len(found) == len(ids) and not missing
    return out


def compare_codecs(workdir: Path, store, codecs: list[str], rows: int, warm_sets: list[list[str]],
                   cold_sets: list[list[str]], weights: list[float]) -> dict:
    """The weighted fetch+sum of `store`'s codec against each of `codecs` on stores of the same rows,
    the calls interleaved (one query on each store in turn) so that contention hits all alike."""
    stores = {store.codec.name: store}
    for name in codecs:
        stores[name], _ = build_store(workdir / f"store-{name}", rows, store.dim, name, store.layout)
    hot = sorted({pid for ids in warm_sets for pid in ids})
    for other in stores.values():
        time_sums(other, [hot[i : i + K] for i in range(0, len(hot), K)], drop_cache=False)  # fill the LRU
    times: dict[str, dict[str, list[float]]] = {name: {"warm": [], "cold": []} for name in stores}
    for kind, sets in (("warm", warm_sets), ("cold", cold_sets)):
        for ids in sets:
            for name, other in stores.items():
                times[name][kind] += time_sums(other, [ids], drop_cache=kind == "cold", weights=weights)
    base = store.codec.name
    out = {}
    for name, other in stores.items():
        warm, cold = _ms(times[name]["warm"]), _ms(times[name]["cold"])
        out[name] = {"warm": warm, "cold": cold, "row_bytes": other.codec.row_bytes(other.dim),
                     "warm_ratio": round(warm["p50_ms"] / times_p50(times[base]["warm"]), 2),
                     "cold_ratio": round(cold["p50_ms"] / times_p50(times[base]["cold"]), 2)}
        if other is not store:
            other.close()
    return out


def times_p50(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def torchload_reference(workdir: Path, store, rows: int, id_sets: list[list[str]]) -> dict:
    """The reference's file: one pickled dict of per-passage {param name: fp32 tensor}, loaded whole."""
    path = workdir / "reference_grads.pt"
    gen = torch.Generator().manual_seed(SEED + 1)
    grads = {}
    for i in range(rows):
        flat = torch.randn(store.dim, generator=gen) * 1e-3
        grads[f"p{i}"] = {
            e["name"]: flat[e["offset"] : e["offset"] + _numel(e["shape"])].view(e["shape"]).clone()
            for e in store.layout
        }
    torch.save(grads, path)
    size = path.stat().st_size
    del grads
    started = time.perf_counter()
    loaded = torch.load(path, weights_only=True)
    load_s = time.perf_counter() - started
    sums = []
    for ids in id_sets:
        ids = [f"p{int(i[1:]) % rows}" for i in ids]
        started = time.perf_counter()
        total = {name: sum(loaded[i][name] for i in ids) for name in loaded[ids[0]]}
        torch.cat([t.reshape(-1) for t in total.values()])  # the flat vector the adapter needs
        sums.append(time.perf_counter() - started)
    del loaded
    path.unlink()
    return {"rows": rows, "file_bytes": size, "load_s": load_s, **_ms(sums)}


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _real_passages(n: int) -> list[str]:
    from models import format_passage

    corpus = json.loads((DATA / CORPUS).read_text())
    rng = random.Random(SEED)
    return [format_passage(p["title"], p["text"]) for p in rng.sample(corpus, n)]


def model_figures(repeats: int, error_passages: int) -> dict:
    """Time `summed_gradient` for 3 real passages; measure codec errors on real per-passage gradients."""
    from gradient_store import CODECS
    from models import Learner, load_preset, passage_gradients, summed_gradient

    torch.manual_seed(SEED)
    learner = Learner.create(load_preset(PRESET), device="cpu")
    passages = _real_passages(max(K, error_passages))
    # On a shared 2-core box OpenMP threads can hurt more than they help, so time the recompute with
    # the default thread count and with one thread, and keep the faster (the speedup is conservative).
    default_threads = torch.get_num_threads()
    by_threads = {}
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        summed_gradient(learner, passages[:K])  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            summed_gradient(learner, passages[:K])
            times.append(time.perf_counter() - started)
        by_threads[threads] = _ms(times)
    torch.set_num_threads(default_threads)
    best = min(by_threads, key=lambda t: by_threads[t]["p50_ms"])

    # An untrained learner has B = 0, so every gA is exactly 0; measure as-is (gB only) and with a
    # random B (std 0.02), which makes gA non-zero too, like a trained learner's.
    errors = {}
    b_names = [n for n in learner.lora_tensors() if n.endswith("lora_B")]
    for variant in ("B0", "Brand"):  # B = 0 as created, then B ~ N(0, 0.02)
        if variant == "Brand":
            with torch.no_grad():
                for name in b_names:
                    learner.lora_tensors()[name].normal_(0.0, 0.02)
        g = passage_gradients(learner, passages[:error_passages])
        is_a = torch.zeros(g.shape[1], dtype=torch.bool)
        for e in learner.layout.to_json():
            if e["name"].endswith("lora_A"):
                is_a[e["offset"] : e["offset"] + _numel(e["shape"])] = True
        for name in ("bf16", "int8"):
            codec = CODECS[name]
            data, scales = codec.encode(g)
            rec = torch.stack(
                [codec.decode(data[i], scales[i] if scales is not None else None) for i in range(g.shape[0])]
            )
            per_row = ((rec - g).norm(dim=1) / g.norm(dim=1)).tolist()
            a_norm = g[:, is_a].norm()
            s = rec[:K].sum(0) - g[:K].sum(0)
            errors[f"{name}_rel_err_{variant}"] = {
                "rel_err_mean": statistics.mean(per_row),
                "rel_err_max": max(per_row),
                "rel_err_A": float((rec[:, is_a] - g[:, is_a]).norm() / a_norm) if a_norm > 0 else None,
                "rel_err_B": float((rec[:, ~is_a] - g[:, ~is_a]).norm() / g[:, ~is_a].norm()),
                "rel_err_sum_of_3": float(s.norm() / g[:K].sum(0).norm()),
            }
    return {
        "recompute": by_threads[best],
        "recompute_threads": best,
        "recompute_by_threads": by_threads,
        "errors": errors,
        "dim": learner.layout.dim,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--codec", default=CODEC, choices=sorted(CODECS))
    parser.add_argument("--versus", action="append", default=[], choices=sorted(CODECS),
                        help="also time the weighted warm and cold fetch+sum on a store of this codec, interleaved "
                        "with --codec's (repeatable); prints the ratios")
    parser.add_argument("--layout-from", type=Path, default=None,
                        help="take D and the LoRA layout from this store's manifest.json (e.g. a store of the "
                        "shipped learner) instead of the bundled preset's")
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--torchload-rows", type=int, default=TORCHLOAD_ROWS)
    parser.add_argument("--no-model", action="store_true", help="skip recompute timing and codec errors")
    parser.add_argument("--workdir", type=Path, default=None, help="where the store is built (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the built store")
    args = parser.parse_args()
    layout = None
    if args.layout_from is not None:
        layout = json.loads(args.layout_from.read_text())["layout"]
        args.dim = layout[-1]["offset"] + _numel(layout[-1]["shape"])
    if args.versus:
        args.versus = [name for name in dict.fromkeys(args.versus) if name != args.codec]

    workdir = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.workdir))
    rng = random.Random(SEED)
    print(
        f"store bench: N={args.rows} rows, D={args.dim}, codec={args.codec}, k={K}, {args.queries} queries, "
        f"torch threads={torch.get_num_threads()}, cores={os.cpu_count()}",
        flush=True,
    )
    try:
        store, build_s = build_store(workdir / "store", args.rows, args.dim, args.codec, layout)
        info = store.info()
        print(
            f"built in {build_s:.1f} s: {info['shards']} shards, {info['size_on_disk_bytes'] / 1e9:.2f} GB, "
            f"{info['bytes_per_passage'] / 1e6:.3f} MB per passage",
            flush=True,
        )

        hot = [f"p{i}" for i in rng.sample(range(args.rows), min(HOT_SET, args.rows))]
        warm_sets = [rng.sample(hot, K) for _ in range(args.queries)]
        uniform_sets = [[f"p{i}" for i in rng.sample(range(args.rows), K)] for _ in range(args.queries)]
        time_sums(store, [hot[i : i + K] for i in range(0, len(hot), K)], drop_cache=False)  # fill the LRU
        warm = _ms(time_sums(store, warm_sets, drop_cache=False))
        cold = _ms(time_sums(store, uniform_sets, drop_cache=True))
        store.clear_cache()
        uniform = _ms(time_sums(store, uniform_sets, drop_cache=False))
        print(
            f"store fetch+sum k={K}: warm p50 {warm['p50_ms']} ms p99 {warm['p99_ms']} ms | LRU dropped p50 "
            f"{cold['p50_ms']} ms p99 {cold['p99_ms']} ms | uniform over N p50 {uniform['p50_ms']} ms "
            f"p99 {uniform['p99_ms']} ms",
            flush=True,
        )
        # The composition's weights ride in the same op (add_'s alpha): a weighted sum costs what a sum does.
        weights = [2.9, 0.07, 0.03][:K] + [1.0] * max(0, K - 3)
        weighted = _ms(time_sums(store, warm_sets, drop_cache=False, weights=weights))
        print(f"weighted fetch+sum k={K} (warm): p50 {weighted['p50_ms']} ms, "
              f"{weighted['p50_ms'] / max(warm['p50_ms'], 1e-9):.2f}x the plain sum's", flush=True)

        versus = None
        if args.versus:
            versus = compare_codecs(workdir, store, args.versus, args.rows, warm_sets, uniform_sets, weights)
            for name, figures in versus.items():
                print(f"weighted fetch+sum k={K}, {name} ({figures['row_bytes']:,} B/row), interleaved: warm p50 "
                      f"{figures['warm']['p50_ms']} ms ({figures['warm_ratio']:.2f}x {args.codec}), LRU dropped p50 "
                      f"{figures['cold']['p50_ms']} ms ({figures['cold_ratio']:.2f}x)", flush=True)

        ref = torchload_reference(workdir, store, min(args.torchload_rows, args.rows), warm_sets)
        torchload_full_s = ref["load_s"] * args.rows / ref["rows"]
        print(
            f"reference torch.load: {ref['rows']} passages, {ref['file_bytes'] / 1e9:.2f} GB fp32 file, load "
            f"{ref['load_s']:.1f} s (≈ {torchload_full_s:.1f} s for N={args.rows}); then sum k={K} p50 "
            f"{ref['p50_ms']} ms p99 {ref['p99_ms']} ms",
            flush=True,
        )
        store.close()

        model = None
        if not args.no_model:
            model = model_figures(RECOMPUTE_REPEATS, ERROR_PASSAGES)
            rc = model["recompute"]
            for threads, figures in model["recompute_by_threads"].items():
                print(f"recompute with {threads} torch thread(s): p50 {figures['p50_ms']} ms", flush=True)
            print(
                f"recompute summed_gradient of {K} real passages: p50 {rc['p50_ms']} ms, max of "
                f"{RECOMPUTE_REPEATS} {rc['p99_ms']} ms; speedup of a warm store fetch+sum: "
                f"{rc['p50_ms'] / warm['p50_ms']:.0f}x (cold: {rc['p50_ms'] / cold['p50_ms']:.0f}x)",
                flush=True,
            )
            print(
                "relative reconstruction error ||x - decode(encode(x))|| / ||x|| on real gradients "
                "(B0: untrained learner, B = 0; Brand: B ~ N(0, 0.02)):"
            )
            for key, e in model["errors"].items():
                a = f"{e['rel_err_A']:.2e}" if e["rel_err_A"] is not None else "n/a (gA = 0)"
                print(
                    f"  {key}: per-row mean {e['rel_err_mean']:.2e} max {e['rel_err_max']:.2e} | "
                    f"A part {a} | B part {e['rel_err_B']:.2e} | sum of 3 {e['rel_err_sum_of_3']:.2e}"
                )
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    recompute_ms = model["recompute"]["p50_ms"] if model else None
    result = {
        "store_p50_ms": warm["p50_ms"],
        "store_p99_ms": warm["p99_ms"],
        "store_cold_p50_ms": cold["p50_ms"],
        "store_cold_p99_ms": cold["p99_ms"],
        "store_uniform_p50_ms": uniform["p50_ms"],
        "store_uniform_p99_ms": uniform["p99_ms"],
        "torchload_s": round(ref["load_s"], 3),
        "torchload_rows": ref["rows"],
        "torchload_s_scaled_to_rows": round(torchload_full_s, 3),
        "torchload_sum_p50_ms": ref["p50_ms"],
        "recompute_ms": recompute_ms,
        "recompute_threads": model["recompute_threads"] if model else None,
        "speedup_vs_recompute": round(recompute_ms / warm["p50_ms"], 1) if recompute_ms else None,
        "bytes_per_passage": round(info["bytes_per_passage"]),
        "rows": args.rows,
        "dim": args.dim,
        "codec": args.codec,
        "build_s": round(build_s, 2),
    }
    if versus:
        result["versus"] = {name: {"row_bytes": f["row_bytes"], "warm_p50_ms": f["warm"]["p50_ms"],
                                   "cold_p50_ms": f["cold"]["p50_ms"], "warm_ratio": f["warm_ratio"],
                                   "cold_ratio": f["cold_ratio"]} for name, f in versus.items()}
    if model:
        for key, e in model["errors"].items():
            result[key] = float(f"{e['rel_err_mean']:.3e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
