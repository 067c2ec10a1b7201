"""What the benchmarks share: real passages (HotpotQA IRCoT paragraphs from the shared data folder)
and closed-loop clients."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def hotpot_passages(n: int) -> list[str]:
    """The first `n` distinct paragraphs, formatted as everywhere else (`format_passage`)."""
    from models import format_passage

    seen, out = set(), []
    with open(DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl") as f:
        for line in f:
            for ctx in json.loads(line)["contexts"]:
                key = (ctx["title"], ctx["paragraph_text"])
                if key not in seen:
                    seen.add(key)
                    out.append(format_passage(*key))
                if len(out) == n:
                    return out
    return out


def run_clients(n: int, clients: int, ask: Callable[[int], None]) -> float:
    """`clients` threads, each calling `ask(i)` for the next of requests 0 .. n-1 as soon as its last
    returns (a closed loop); the wall seconds until all are answered."""
    indices, lock = iter(range(n)), threading.Lock()

    def client() -> None:
        while True:
            with lock:
                i = next(indices, None)
            if i is None:
                return
            ask(i)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
