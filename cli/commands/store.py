"""`regrad store info|verify|merge|compact`: look at, check, combine and compact gradient stores."""

from __future__ import annotations

import argparse
import json
import math

from offline_tools.errors import ExitStatus, RegradError

__all__ = ["register", "run_info", "run_verify", "run_merge", "run_compact", "NAME"]

NAME = "store"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="inspect, verify, merge or compact gradient stores",
        description="Inspect, verify, merge or compact gradient stores (see docs/gradient-store.md).",
    )
    actions = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True,
                                    help="what to do with the store")

    info = actions.add_parser("info", help="passages, codec, size on disk, bytes per passage, fingerprint")
    info.add_argument("dir", metavar="DIR", help="the store directory")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(func=run_info)

    verify = actions.add_parser(
        "verify", help="check every shard's sha256 and every row's checksum (exit 5 when anything is corrupt)"
    )
    verify.add_argument("dir", metavar="DIR", help="the store directory")
    verify.add_argument("--json", action="store_true", help="print the report as one JSON object")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    verify.set_defaults(func=run_verify)

    merge = actions.add_parser(
        "merge",
        help="copy the rows of stores of one learner and codec into one store (one atomic commit)",
        description="Copy every row of SRC stores (one learner fingerprint, codec and layout) into DST, created "
        "like the first source when missing. The merge is one commit: killed midway, DST is left as it was.",
    )
    merge.add_argument("sources", nargs="+", metavar="SRC", help="source store directories, read in this order")
    merge.add_argument("--into", required=True, metavar="DST", help="the destination store directory")
    merge.add_argument(
        "--on-duplicate", choices=["error", "skip", "replace"], default="error",
        help="an id already in DST or in an earlier SRC: error (default: refuse the merge, DST unchanged), "
        "skip (keep the first row) or replace (keep the last)",
    )
    merge.add_argument("--verify", action="store_true", help="verify DST after the merge (exit 5 if corrupt)")
    merge.add_argument("--json", action="store_true", help="print the report as one JSON object")
    merge.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    merge.set_defaults(func=run_merge)

    compact = actions.add_parser(
        "compact",
        help="merge small shards and drop garbage (replaced) rows, in one atomic switch",
        description="Copy the live rows of small shards and of shards holding replaced rows into full shards "
        "(as stored bytes), switch every moved id in one transaction, then delete the old files. Killed midway, "
        "the store is left as it was or compacted. Readers may keep serving; writers wait for it.",
    )
    compact.add_argument("dir", metavar="STORE", help="the store directory")
    compact.add_argument(
        "--target-shard-mb", type=_positive_float, default=None, metavar="N",
        help="size of a new shard in MiB (default, and most: the store's rows_per_shard rows, up to 256 MiB)",
    )
    compact.add_argument("--lock-timeout", type=float, default=30.0, metavar="S",
                         help="seconds to wait for another writer of the store (default 30)")
    compact.add_argument("--json", action="store_true", help="print the report as one JSON object")
    compact.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    compact.set_defaults(func=run_compact)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def run_info(args: argparse.Namespace) -> int:
    from gradient_store import GradientStore

    with GradientStore.open(args.dir, cache_bytes=0) as store:
        info = store.info()
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in info.items()}))
        return ExitStatus.SUCCESS
    per_passage = info["bytes_per_passage"]
    rows = [
        ("store", info["path"]),
        ("passages", f"{info['passages']:,}"),
        ("codec", f"{info['codec']} ({_human_bytes(info['row_bytes'])} per row, D = {info['dim']:,})"),
        ("size on disk", f"{_human_bytes(info['size_on_disk_bytes'])} ({info['size_on_disk_bytes']:,} bytes)"),
        ("bytes/passage", "-" if math.isnan(per_passage) else f"{_human_bytes(per_passage)} ({per_passage:,.0f})"),
        (
            "shards",
            f"{info['shards']} (up to {info['rows_per_shard']} rows each), {info['garbage_rows']} garbage row(s)",
        ),
        ("fingerprint", info["fingerprint"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return ExitStatus.SUCCESS


def run_verify(args: argparse.Namespace) -> int:
    from gradient_store import GradientStore

    with GradientStore.open(args.dir, cache_bytes=0) as store:
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=store.info()["shards"], desc="verify", unit="shard", leave=False)
        try:
            report = store.verify(on_shard=(lambda _record: bar.update(1)) if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
    if args.json:
        print(json.dumps({"ok": report.ok, **vars(report)}))
    else:
        print(report.summary())
    if not report.ok:
        raise RegradError(
            f"gradient store {args.dir} failed verification: {len(report.errors)} error(s), first: "
            f"{report.errors[0]}; re-encode the passages listed above or restore the damaged shard(s)",
            exit_status=ExitStatus.CORRUPT,
        )
    return ExitStatus.SUCCESS


def run_merge(args: argparse.Namespace) -> int:
    from gradient_store import GradientStore, merge_stores

    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(desc="merge", unit="row", leave=False)
    try:
        report = merge_stores(args.sources, args.into, on_duplicate=args.on_duplicate,
                              on_rows=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    result = {k: v for k, v in vars(report).items()}
    verified = None
    if args.verify:
        with GradientStore.open(args.into, cache_bytes=0) as store:
            verified = store.verify()
        result["verify_ok"] = verified.ok
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{report.into}: {report.rows_copied:,} row(s) copied from {len(report.sources)} store(s), "
              f"{report.duplicates:,} duplicate id(s) ({args.on_duplicate}), {report.store_rows:,} passage(s) "
              f"now, {report.seconds:.1f} s")
        if verified is not None:
            print(verified.summary())
    if verified is not None and not verified.ok:
        raise RegradError(
            f"gradient store {args.into} failed verification after the merge: {verified.errors[0]}; "
            f"run `regrad store verify {args.into}` for the full report",
            exit_status=ExitStatus.CORRUPT,
        )
    return ExitStatus.SUCCESS


def run_compact(args: argparse.Namespace) -> int:
    from gradient_store import compact_store

    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(desc="compact", unit="row", leave=False)
    target = None if args.target_shard_mb is None else int(args.target_shard_mb * (1 << 20))
    try:
        report = compact_store(args.dir, target_shard_bytes=target, lock_timeout_s=args.lock_timeout,
                               progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps({**vars(report), "changed": report.changed}))
    elif not report.changed:
        print(f"{report.path}: already compact: {report.shards_before} shard(s), {report.rows_kept:,} passage(s), "
              "no garbage rows; nothing changed")
    else:
        print(f"{report.path}: {report.shards_rewritten} shard(s) rewritten into {report.shards_written} "
              f"({report.rows_copied:,} row(s) copied), {report.shards_before} -> {report.shards_after} shard(s), "
              f"{report.garbage_rows_dropped:,} garbage row(s) dropped, {_human_bytes(report.bytes_before)} -> "
              f"{_human_bytes(report.bytes_after)} of shards, {report.rows_kept:,} passage(s), {report.seconds:.1f} s")
    return ExitStatus.SUCCESS
