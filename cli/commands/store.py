"""`regrad store info DIR` and `regrad store verify DIR`: look at and check a gradient store."""

from __future__ import annotations

import argparse
import json
import math

from offline_tools.errors import ExitStatus, RegradError

__all__ = ["register", "run_info", "run_verify", "NAME"]

NAME = "store"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="inspect or verify a gradient store",
        description="Inspect or verify a gradient store (see docs/gradient-store.md).",
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
