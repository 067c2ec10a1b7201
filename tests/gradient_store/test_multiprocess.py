"""Several processes on one store: readers opened before a writer (another process) appends see its rows,
always whole commits, with the values written; a store on a network filesystem (several hosts) is warned
about."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import gradient_store.store as store_module
from gradient_store import GradientStore
from gradient_store.filesystem import filesystem_type

from .conftest import FINGERPRINT

# A reader process: opens the store once, then answers JSON commands on stdin, one per line.
READER = """
import json, sys, time
from gradient_store import GradientStore
store = GradientStore.open(sys.argv[1], expect_fingerprint=sys.argv[2])
print(json.dumps({"ready": len(store)}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "sum":
        r = store.sum(cmd["ids"])
        print(json.dumps({"found": r.found_ids, "missing": r.missing_ids, "len": len(store),
                          "vector": r.vector.tolist()}), flush=True)
    elif cmd["op"] == "watch":  # poll every batch until all are whole; record each batch's found counts
        seen = {str(i): set() for i in range(len(cmd["batches"]))}
        deadline = time.monotonic() + cmd["timeout_s"]
        while time.monotonic() < deadline:
            counts = [len(store.sum(ids).found_ids) for ids in cmd["batches"]]
            for i, n in enumerate(counts):
                seen[str(i)].add(n)
            if all(n == len(ids) for n, ids in zip(counts, cmd["batches"])):
                break
        print(json.dumps({k: sorted(v) for k, v in seen.items()}), flush=True)
"""

# A writer process: appends the given batches (one commit each) and exits.
WRITER = """
import json, sys, time, zlib
import torch
from gradient_store import GradientStore
{recipe}
store = GradientStore.open(sys.argv[1])
for ids in json.loads(sys.argv[2]):
    store.append(ids, vectors_for(ids))
    time.sleep(0.01)
"""


class Reader:
    """A reader process on `path`, opened (and the store's length read) before returning."""

    def __init__(self, path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(path), FINGERPRINT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.opened_with = self._reply()["ready"]

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"reader exited with {self.proc.wait(timeout=300)}"
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=300) == 0


def _write(path, vector_recipe: str, batches: list[list[str]]) -> subprocess.Popen:
    script = WRITER.format(recipe=textwrap.dedent(vector_recipe))
    return subprocess.Popen([sys.executable, "-c", script, str(path), json.dumps(batches)])


def test_readers_opened_before_a_writer_process_see_its_rows(make_store, vec, vector_recipe):
    store = make_store(codec="bf16", rows_per_shard=4)
    store.append(["old-0", "old-1", "old-2"], vec(["old-0", "old-1", "old-2"]))
    readers = [Reader(store.path), Reader(store.path)]
    try:
        new = [f"new-{i}" for i in range(6)]  # one commit spanning two new shards
        assert readers[0].ask(op="sum", ids=new)["missing"] == new
        writer = _write(store.path, vector_recipe, [new])
        assert writer.wait(timeout=600) == 0
        ids = ["old-1", *new]
        expected = store.sum(ids).vector  # this process's handle: opened before the writer, too
        exact = vec(ids).sum(0)
        assert float((expected - exact).norm() / exact.norm()) < 1e-2  # bf16 rounding only
        for reader in readers:
            assert reader.opened_with == 3
            reply = reader.ask(op="sum", ids=ids)
            assert (reply["found"], reply["missing"], reply["len"]) == (ids, [], 9)
            assert torch.equal(torch.tensor(reply["vector"]), expected)
    finally:
        for reader in readers:
            reader.close()


def test_readers_see_whole_commits_while_a_writer_appends(make_store, vec, vector_recipe):
    store = make_store(codec="int8", rows_per_shard=4)
    store.append(["old-0"], vec(["old-0"]))
    batches = [[f"b{b}-{i}" for i in range(5)] for b in range(8)]  # 5 rows: each commit spans shards
    reader = Reader(store.path)
    try:
        reader.proc.stdin.write(json.dumps({"op": "watch", "batches": batches, "timeout_s": 600}) + "\n")
        reader.proc.stdin.flush()
        writer = _write(store.path, vector_recipe, batches)
        assert writer.wait(timeout=600) == 0
        seen = reader._reply()
        # Every batch was seen complete, and never partly: a commit is visible whole or not at all.
        assert all(set(counts) <= {0, 5} and counts[-1] == 5 for counts in seen.values()), seen
        reopened = GradientStore.open(store.path)
        try:
            assert reopened.verify().ok
            got = reopened.get([pid for ids in batches for pid in ids])
            assert len(got) == 40
        finally:
            reopened.close()
    finally:
        reader.close()


def test_a_store_on_a_network_filesystem_is_warned_about(make_store, monkeypatch, caplog):
    store = make_store()
    monkeypatch.setattr(store_module, "filesystem_type", lambda path: "nfs4")
    with caplog.at_level(logging.WARNING, logger="regrad.gradient_store"):
        GradientStore.open(store.path).close()
    assert "nfs4 filesystem" in caplog.text and "one host" in caplog.text
    caplog.clear()
    monkeypatch.setattr(store_module, "filesystem_type", lambda path: "ext4")
    with caplog.at_level(logging.WARNING, logger="regrad.gradient_store"):
        GradientStore.open(store.path).close()
    assert caplog.text == ""


def test_filesystem_type_names_the_innermost_mount():
    assert filesystem_type(Path("/proc/self")) == "proc"  # inside /, but /proc is its own mount
