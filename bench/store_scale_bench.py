"""Gradient store at scale: fetch+sum p50/p99, open time, index lookup, memory and files from 10^3 to 10^6 rows.

For each (rows N, width D) of the sweep it builds a store with the real writer (bulk appends of one
shard each, a commit per shard, as `regrad encode` does), then measures the read side in a FRESH
process (so memory and open files are the reader's, not the builder's):
  - open: `GradientStore.open` (manifest load + SQLite connect), and the first `sum` after it;
  - lookup: `index.sqlite` id -> (shard, row) for k random ids (the B-tree search alone);
  - sum, page cache dropped: `posix_fadvise(DONTNEED)` on every shard and the index, LRU off, then k random
    ids per call (rows come from disk unless an earlier call of the series read them);
  - sum, page-cache warm: the same ids read once first, then timed with the LRU dropped before each call
    (the memory-mapped copy + CRC32 + adds: what a row costs once the OS has it);
  - sum, LRU warm: ids from a hot set held by the row cache (the service's steady state), plain and weighted;
  - a one-row append (a commit, as POST /documents makes one) on the store of N rows;
  (--small-commits: instead, how a one-row commit's cost grows with the shard count; see `small_commits`.)
  (--compact N: instead, a store of N one-row commits plus replaced rows, measured before and after
   `regrad store compact`; see `compaction`.)
  - RSS after open and after the queries, open file descriptors, memory maps of shards, shards, index size.
Timings on a shared machine are contended: compare rows of one run. The last line printed is JSON.

    .venv/bin/python bench/store_scale_bench.py --rows 1e3,1e4,1e5,1e6 --dim 4096
    .venv/bin/python bench/store_scale_bench.py --rows 1e4 --dim 1024,4096,16384,65536
    .venv/bin/python bench/store_scale_bench.py --small-commits 300 --dim 4096 --at-shards 10000
    .venv/bin/python bench/store_scale_bench.py --compact 2000 --dim 4096
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# -- knobs -------------------------------------------------------------------------------------
ROWS = "1e3,1e4,1e5,1e6"  # store sizes (passages)
DIMS = "4096"  # row widths D (values per gradient); the bundled preset's is 760,320
CODEC = "bf16"  # the store's default codec
K = 3  # passages summed per request (the service's top-k)
QUERIES = 1000  # timed calls per measurement
HOT_SET = 60  # LRU-warm: ids drawn from this many passages
APPENDS = 20  # one-row appends timed at the end (each a commit, as POST /documents makes)
AT_SHARDS = "10000"  # --small-commits: one-row commits also timed on stores of this many shards
WEIGHTS = [2.9, 0.07, 0.03]  # a composition's weights for the weighted sum
MAX_BYTES = 10e9  # refuse a sweep point whose shards would exceed this (disk here is shared)
SEED = 0
# -----------------------------------------------------------------------------------------------


def passage_ids(first: int, count: int) -> list[str]:
    """Ids shaped like `retrieval.passage_id`'s (16 hex chars of a hash), so the index B-tree sees random
    insertion order, as it does for a real corpus."""
    return [hashlib.blake2b(str(i).encode(), digest_size=8).hexdigest() for i in range(first, first + count)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(statistics.median(ms), 4), "p99_ms": round(_percentile(ms, 0.99), 4)}


def _status_mb(field: str = "VmRSS") -> float:
    """A memory figure of this process from /proc/self/status (VmHWM: peak RSS since exec; unlike
    getrusage's ru_maxrss it does not carry the builder's peak across the child's exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _shard_rss_mb() -> float:
    """Resident pages of the memory-mapped shards (file-backed: the kernel reclaims them under pressure)."""
    kb, in_shard = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:  # a mapping's first line: "start-end perms offset dev inode path"
                in_shard = "/shards/shard-" in line
            elif in_shard and line.startswith("Rss:"):
                kb += int(line.split()[1])
    return kb / 1024


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build(path: Path, rows: int, dim: int, codec: str) -> dict:
    """A store of `rows` random rows, written as `regrad encode` writes: one writer, a commit per full shard."""
    from gradient_store import GradientStore

    layout = [{"name": "flat", "shape": [dim], "offset": 0}]
    store = GradientStore.create(path, layout=layout, fingerprint="0" * 64, codec=codec)
    gen = torch.Generator().manual_seed(SEED)
    batch = store.rows_per_shard
    started = time.perf_counter()
    with store.writer() as w:
        for first in range(0, rows, batch):
            n = min(batch, rows - first)
            w.append(passage_ids(first, n), torch.randn(n, dim, generator=gen) * 1e-3)
            w.commit()
            print(f"  built {first + n}/{rows} rows", file=sys.stderr, end="\r")
    build_s = time.perf_counter() - started
    print(file=sys.stderr)
    shards = store.info()["shards"]
    rows_per_shard = store.rows_per_shard
    store.close()
    return {"build_s": round(build_s, 2), "build_rows_per_s": round(rows / build_s), "shards": shards,
            "rows_per_shard": rows_per_shard}


def _drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the store's clean pages (no root needed; best effort on a shared box)."""
    for f in [*sorted((path / "shards").iterdir()), path / "index.sqlite"]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _timed(fn, calls) -> list[float]:
    out = []
    for args in calls:
        started = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - started)
    return out


def measure(path: Path, rows: int, queries: int) -> dict:
    """The read side, in this (fresh) process."""
    from gradient_store import GradientStore
    from gradient_store.manifest import Manifest

    rng = random.Random(SEED + 1)
    rss_start = _status_mb()
    _drop_page_cache(path)
    started = time.perf_counter()
    manifest = Manifest.load(path)
    manifest_load_s = time.perf_counter() - started
    del manifest
    started = time.perf_counter()
    store = GradientStore.open(path, expect_fingerprint="0" * 64)
    open_s = time.perf_counter() - started
    first_ids = passage_ids(rng.randrange(rows), 1)
    started = time.perf_counter()
    assert store.sum(first_ids).found_ids == first_ids
    first_sum_s = time.perf_counter() - started
    rss_open = _status_mb()
    rss_anon_open = _status_mb("RssAnon")

    def ids_of(n_sets: int) -> list[list[str]]:
        return [[passage_ids(i, 1)[0] for i in rng.sample(range(rows), K)] for _ in range(n_sets)]

    def cold_sum(ids: list[str]) -> None:
        store.clear_cache()
        result = store.sum(ids)
        assert len(result.found_ids) == K, result

    # Page cache dropped: the series reads rows from disk (at small N, later calls find earlier calls' pages).
    _drop_page_cache(path)
    disk = _timed(cold_sum, [(ids,) for ids in ids_of(queries)])
    # The index B-tree alone: first pass over new ids (cold leaf pages at large N), then the same ids again.
    lookup_sets = [(ids,) for ids in ids_of(queries)]
    lookup_cold = _timed(store._index.lookup, lookup_sets)
    lookup = _timed(store._index.lookup, lookup_sets)
    rss_anon_lookups = _status_mb("RssAnon")
    # Page-cache warm, LRU dropped before each call.
    sets = ids_of(queries)
    for ids in sets:
        store.sum(ids)
    page_warm = _timed(cold_sum, [(ids,) for ids in sets])
    # LRU warm: a hot set that the row cache holds.
    store.clear_cache()
    hot = [passage_ids(i, 1)[0] for i in rng.sample(range(rows), min(HOT_SET, rows))]
    for ids in (hot[i : i + K] for i in range(0, len(hot), K)):
        store.sum(ids)
    hot_sets = [rng.sample(hot, K) for _ in range(queries)]
    lru = _timed(store.sum, [(ids,) for ids in hot_sets])
    weighted = _timed(lambda ids: store.sum(ids, weights=WEIGHTS[:K]), [(ids,) for ids in hot_sets])

    # The service's POST /documents path: one small commit per request on a store of N rows.
    new_rows = [([f"new-{os.getpid()}-{i}"], torch.randn(1, store.dim) * 1e-3) for i in range(APPENDS)]
    append = _timed(store.append, new_rows)

    with open("/proc/self/maps") as f:
        shard_maps = sum(1 for line in f if "/shards/shard-" in line)
    out = {
        "open_ms": round(open_s * 1000, 3),
        "manifest_load_ms": round(manifest_load_s * 1000, 3),
        "first_sum_ms": round(first_sum_s * 1000, 3),
        "lookup": _ms(lookup),
        "lookup_first_pass": _ms(lookup_cold),
        "sum_disk": _ms(disk),
        "sum_page_warm": _ms(page_warm),
        "sum_lru_warm": _ms(lru),
        "sum_lru_warm_weighted": _ms(weighted),
        "append_1_row": _ms(append),
        "rss_start_mb": round(rss_start, 1),
        "rss_open_mb": round(rss_open, 1),
        "rss_end_mb": round(_status_mb(), 1),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "rss_anon_open_mb": round(rss_anon_open, 1),
        "rss_anon_after_lookups_mb": round(rss_anon_lookups, 1),
        "rss_anon_end_mb": round(_status_mb("RssAnon"), 1),  # the process's own memory
        "rss_shards_end_mb": round(_shard_rss_mb(), 1),  # mapped shard pages: page cache, reclaimable
        "open_fds": len(os.listdir("/proc/self/fd")),
        "shard_maps": shard_maps,
        "cache_rows": store.cache_stats()["rows"],
        "index_bytes": (path / "index.sqlite").stat().st_size,
        "manifest_bytes": (path / "manifest.json").stat().st_size,
    }
    store.close()
    return out


def _summary(f: dict) -> str:
    """One line per sweep point."""
    def pq(key: str) -> str:
        return f"p50 {f[key]['p50_ms']} p99 {f[key]['p99_ms']} ms"

    return (
        f"N={f['rows']:>8} D={f['dim']:>6}: {f['shards']} shards, build {f['build_s']} s | open {f['open_ms']} ms "
        f"(manifest {f['manifest_load_ms']} ms), first sum {f['first_sum_ms']} ms | lookup {pq('lookup')} "
        f"(first pass {pq('lookup_first_pass')}) | sum: disk {pq('sum_disk')}, page-warm {pq('sum_page_warm')}, "
        f"LRU {pq('sum_lru_warm')}, weighted {pq('sum_lru_warm_weighted')} | append 1 row {pq('append_1_row')} "
        f"| RSS open {f['rss_open_mb']} end {f['rss_end_mb']} MB (anon {f['rss_anon_open_mb']} -> "
        f"{f['rss_anon_end_mb']}, shard pages {f['rss_shards_end_mb']}) | fds {f['open_fds']}, shard maps "
        f"{f['shard_maps']}, index {f['index_bytes'] / 1e6:.1f} MB"
    )


def _bulk_shards(path: Path, shards: int, dim: int, codec: str) -> float:
    """A store of `shards` one-row shards, built fast: one writer, `rows_per_shard=1`, a commit per 1,000 rows
    (a one-row commit on it writes one one-row shard, as on a store of POST /documents commits)."""
    from gradient_store import GradientStore

    store = GradientStore.create(path, layout=[{"name": "flat", "shape": [dim], "offset": 0}],
                                 fingerprint="0" * 64, codec=codec, rows_per_shard=1)
    gen = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()
    with store.writer() as w:
        for first in range(0, shards, 1000):
            n = min(1000, shards - first)
            w.append([f"bulk-{first + i}" for i in range(n)], torch.randn(n, dim, generator=gen) * 1e-3)
            w.commit()
            print(f"  built {first + n}/{shards} shards", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    store.close()
    return time.perf_counter() - started


def small_commits(path: Path, commits: int, dim: int, codec: str, at_shards: list[int]) -> dict:
    """How a one-row commit's cost (as POST /documents makes one, one shard each) grows with the shard count.

    `commits` one-row commits on a new store: the p50 of the first tenth against the last tenth. Then, for
    each count in `at_shards`, a store of that many shards, opened afresh: its first one-row commit (the
    handle's first writer, which lists `shards/` once) and APPENDS more (the steady state), against the
    first tenth of this run. Only store APIs that format-1 regrad has too, so the script times either.
    """
    import gradient_store
    from gradient_store import GradientStore

    store = GradientStore.create(path, layout=[{"name": "flat", "shape": [dim], "offset": 0}],
                                 fingerprint="0" * 64, codec=codec)
    gen = torch.Generator().manual_seed(SEED)
    times = _timed(store.append, [([f"doc-{i}"], torch.randn(1, dim, generator=gen)) for i in range(commits)])
    store.close()
    window = max(1, commits // 10)
    first_p50 = statistics.median(times[:window])
    at = {}
    for n in at_shards:
        big = path.with_name(f"{path.name}-{n}")
        build_s = _bulk_shards(big, n, dim, codec)
        with GradientStore.open(big) as store:
            rows = [([f"new-{i}"], torch.randn(1, dim, generator=gen)) for i in range(APPENDS + 1)]
            timed = _timed(store.append, rows)
            assert len(store) == n + APPENDS + 1
        at[n] = {"build_s": round(build_s, 1), "first_commit_ms": round(timed[0] * 1000, 2),
                 "commit": _ms(timed[1:]), "vs_first_tenth": round(statistics.median(timed[1:]) / first_p50, 2),
                 "manifest_bytes": (big / "manifest.json").stat().st_size}
        shutil.rmtree(big)
    return {
        "format_version": gradient_store.FORMAT_VERSION,
        "commits": commits,
        "first_tenth": _ms(times[:window]),
        "last_tenth": _ms(times[-window:]),
        "growth_p50": round(statistics.median(times[-window:]) / first_p50, 2),
        "manifest_bytes": (path / "manifest.json").stat().st_size,
        "at_shards": at,
    }


def _measure_child(path: Path, rows: int, queries: int) -> dict:
    """`measure` in a fresh interpreter (the reader's own memory and files, not the builder's)."""
    child = subprocess.run([sys.executable, __file__, "--measure", str(path), "--rows", str(rows),
                            "--queries", str(queries)], capture_output=True, text=True, check=False)
    if child.returncode != 0:
        sys.exit(f"measuring {path} failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def compaction(path: Path, rows: int, dim: int, codec: str, queries: int) -> dict:
    """A store as a service leaves it: `rows` one-row commits (POST /documents, one shard each), a tenth of
    them replaced (garbage rows); read in a fresh process, then `compact_store`, then read again."""
    from gradient_store import GradientStore, compact_store

    store = GradientStore.create(path, layout=[{"name": "flat", "shape": [dim], "offset": 0}],
                                 fingerprint="0" * 64, codec=codec)
    gen = torch.Generator().manual_seed(SEED)
    started = time.perf_counter()
    for i in range(rows):
        store.append(passage_ids(i, 1), torch.randn(1, dim, generator=gen) * 1e-3)
    for i in range(0, rows, 10):
        store.append(passage_ids(i, 1), torch.randn(1, dim, generator=gen) * 1e-3, on_duplicate="replace")
    build_s = time.perf_counter() - started
    info = store.info()
    store.close()
    before = {"shards": info["shards"], "garbage_rows": info["garbage_rows"],
              "shard_bytes": _dir_bytes(path / "shards"), **_measure_child(path, rows, queries)}
    report = compact_store(path)
    with GradientStore.open(path) as store:
        info = store.info()
    after = {"shards": info["shards"], "garbage_rows": info["garbage_rows"],
             "shard_bytes": _dir_bytes(path / "shards"), **_measure_child(path, rows, queries)}
    return {"rows": rows, "dim": dim, "codec": codec, "build_s": round(build_s, 1),
            "compact_s": round(report.seconds, 2), "rows_copied": report.rows_copied,
            "before": before, "after": after,
            "sum_disk_p50_before_over_after": round(before["sum_disk"]["p50_ms"] / after["sum_disk"]["p50_ms"], 2),
            "open_ms_before_over_after": round(before["open_ms"] / after["open_ms"], 2)}


def _parse_counts(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=ROWS, help="comma-separated store sizes, e.g. 1e3,1e4,1e5,1e6")
    parser.add_argument("--dim", default=DIMS, help="comma-separated row widths D, e.g. 4096 or 1024,65536")
    parser.add_argument("--codec", default=CODEC, choices=["fp32", "bf16", "int8"])
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--workdir", type=Path, default=None, help="where stores are built (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the built stores")
    parser.add_argument("--small-commits", type=int, default=0,
                        help="instead of the sweep: this many one-row commits, each its own shard (first D of --dim)")
    parser.add_argument("--at-shards", default=AT_SHARDS,
                        help="with --small-commits: also time commits on stores of these many shards (\"\" for none)")
    parser.add_argument("--compact", type=int, default=0, metavar="N",
                        help="instead of the sweep: N one-row commits, a tenth replaced, before and after compaction")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()

    if args.measure is not None:
        print(json.dumps(measure(args.measure, _parse_counts(args.rows)[0], args.queries)))
        return

    from gradient_store import get_codec

    if args.compact:
        workdir = Path(tempfile.mkdtemp(prefix="store-compact-", dir=args.workdir))
        try:
            f = compaction(workdir / "store", args.compact, _parse_counts(args.dim)[0], args.codec, args.queries)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for when in ("before", "after"):
            m = f[when]
            print(f"{when:>6}: {m['shards']} shards, {m['garbage_rows']} garbage rows, {m['shard_bytes'] / 1e6:.1f} MB "
                  f"of shards; open {m['open_ms']} ms; sum of {K}, page cache dropped: p50 {m['sum_disk']['p50_ms']} "
                  f"p99 {m['sum_disk']['p99_ms']} ms; page-warm p50 {m['sum_page_warm']['p50_ms']} ms; "
                  f"{m['shard_maps']} shard maps, {m['open_fds']} fds")
        print(f"compacted {f['rows_copied']} rows in {f['compact_s']} s; sum (disk) p50 before / after "
              f"{f['sum_disk_p50_before_over_after']}x")
        print(json.dumps(f))
        return
    if args.small_commits:
        workdir = Path(tempfile.mkdtemp(prefix="store-commits-", dir=args.workdir))
        try:
            figures = small_commits(workdir / "store", args.small_commits, _parse_counts(args.dim)[0], args.codec,
                                    _parse_counts(args.at_shards))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"format_version {figures['format_version']}: {figures['commits']} one-row commits (one shard each): "
              f"p50 {figures['first_tenth']['p50_ms']} ms in the first tenth, {figures['last_tenth']['p50_ms']} ms in "
              f"the last ({figures['growth_p50']}x); manifest {figures['manifest_bytes'] / 1e6:.3f} MB")
        for n, m in figures["at_shards"].items():
            print(f"  at {n} shards (built in {m['build_s']} s): first commit of a fresh handle "
                  f"{m['first_commit_ms']} ms, then p50 {m['commit']['p50_ms']} p99 {m['commit']['p99_ms']} ms "
                  f"({m['vs_first_tenth']}x the first tenth); manifest {m['manifest_bytes'] / 1e6:.3f} MB")
        print(json.dumps(figures))
        return
    sweep = [(n, d) for d in _parse_counts(args.dim) for n in _parse_counts(args.rows)]
    for n, d in sweep:
        size = n * get_codec(args.codec).row_bytes(d)
        if size > MAX_BYTES:
            parser.error(f"--rows {n} --dim {d} needs {size / 1e9:.1f} GB of shards, over {MAX_BYTES / 1e9:.0f} GB")
    print(f"store scale bench: codec={args.codec}, k={K}, {args.queries} queries per figure, "
          f"cores={os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="store-scale-", dir=args.workdir))
    results = []
    try:
        for n, d in sweep:
            path = workdir / f"store-{n}-{d}"
            built = build(path, n, d, args.codec)
            figures = {"rows": n, "dim": d, "codec": args.codec, "shard_bytes": _dir_bytes(path / "shards"),
                       **built, **_measure_child(path, n, args.queries)}
            results.append(figures)
            print(_summary(figures), flush=True)
            if not args.keep:
                shutil.rmtree(path)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
