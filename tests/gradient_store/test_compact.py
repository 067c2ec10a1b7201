"""`compact_store`: small shards merged and garbage rows dropped, rows bit-identical, one atomic switch that a
SIGKILL cannot split, and readers (this process or another) answering correctly across it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gradient_store.writer as writer_module
from gradient_store import (
    CorruptShardError,
    GradientStore,
    StoreError,
    StoreLockedError,
    compact_store,
)

from .conftest import FINGERPRINT, raw_rows


def _shard_files(store: GradientStore) -> dict[str, tuple[int, int]]:
    """`{file name: (inode, size)}` of every file in shards/: what is on disk, registered or not."""
    return {f.name: (f.stat().st_ino, f.stat().st_size) for f in (store.path / "shards").iterdir()}


def _tiny_commits(store: GradientStore, vec, ids: list[str]) -> None:
    for pid in ids:  # one commit, hence one shard file, per id: what POST /documents does
        store.append([pid], vec([pid]))


def _snapshot(store: GradientStore) -> tuple[list[str], dict, dict[str, torch.Tensor]]:
    ids = store.ids()
    return ids, raw_rows(store), store.get(ids)


def _assert_same_rows(store: GradientStore, before) -> None:
    ids, raw, decoded = before
    assert store.ids() == ids
    assert raw_rows(store) == raw  # the stored bytes, gradients and scales
    got = store.get(ids)
    assert set(got) == set(ids) and all(torch.equal(got[pid], decoded[pid]) for pid in ids)


@pytest.mark.parametrize("codec", ["bf16", "int8", "fp32", "lowrank4"])
def test_many_tiny_commits_become_full_shards_bit_for_bit(make_store, vec, codec):
    store = make_store(codec=codec, rows_per_shard=4)
    ids = [f"doc-{i}" for i in range(11)]
    _tiny_commits(store, vec, ids)
    assert len(store.shards()) == 11 and len(_shard_files(store)) == 11
    before = _snapshot(store)

    report = compact_store(store.path)

    assert report.changed and (report.shards_before, report.shards_after) == (11, 3)
    assert (report.shards_rewritten, report.shards_written, report.rows_copied, report.rows_kept) == (11, 3, 11, 11)
    assert report.bytes_after < report.bytes_before  # 11 headers became 3
    assert [s.rows for s in store.shards()] == [4, 4, 3]
    assert len(_shard_files(store)) == 3, "the old files are deleted"
    _assert_same_rows(store, before)  # through the handle opened before the compaction
    with GradientStore.open(store.path) as fresh:
        _assert_same_rows(fresh, before)
        verified = fresh.verify()
        assert verified.ok and not verified.warnings and verified.garbage_rows == 0


def test_rows_are_laid_out_in_ids_order(make_store, vec):
    store = make_store(rows_per_shard=4)
    ids = [f"z{i}" for i in range(6)] + ["a", "m"]  # insertion order, not sorted order
    _tiny_commits(store, vec, ids)
    compact_store(store.path)
    refs = store._index.lookup(ids)
    positions = [(refs[pid].shard_id, refs[pid].row) for pid in ids]
    assert positions == sorted(positions) and store.ids() == ids


def test_replaced_rows_are_dropped_and_disk_space_comes_back(make_store, vec):
    store = make_store(codec="fp32", rows_per_shard=8)
    ids = [f"doc-{i}" for i in range(16)]
    store.append(ids[:8], vec(ids[:8]))
    store.append(ids[8:], vec(ids[8:]))
    replaced = ["doc-1", "doc-2", "doc-3", "doc-9", "doc-10", "doc-11"]
    new_values = vec([f"new-{pid}" for pid in replaced])
    store.append(replaced, new_values, on_duplicate="replace")
    assert store.info()["garbage_rows"] == 6
    before = _snapshot(store)
    disk_before = store.info()["size_on_disk_bytes"]

    report = compact_store(store.path)

    assert report.garbage_rows_dropped == 6 and report.rows_kept == 16
    assert (report.shards_before, report.shards_after) == (3, 2)
    info = store.info()
    assert info["garbage_rows"] == 0 and info["passages"] == 16 and info["shards"] == 2
    assert info["size_on_disk_bytes"] < disk_before  # the index's WAL grows a little meanwhile
    assert sum(size for _, size in _shard_files(store).values()) == report.bytes_after
    assert report.bytes_before - report.bytes_after >= 6 * store.codec.row_bytes(store.dim)
    verified = store.verify()
    assert verified.ok and verified.garbage_rows == 0 and not verified.warnings
    _assert_same_rows(store, before)
    got = store.get(replaced)
    assert all(torch.equal(got[pid], new_values[i]) for i, pid in enumerate(replaced))  # the new rows survive
    assert store.ids() == ids  # a replaced id kept its place


def test_full_shards_without_garbage_are_left_alone(make_store, vec):
    store = make_store(rows_per_shard=4)
    bulk = [f"bulk-{i}" for i in range(8)]
    store.append(bulk, vec(bulk))  # two full shards
    _tiny_commits(store, vec, ["t0", "t1", "t2"])
    full = {name: stat for name, stat in _shard_files(store).items() if name in ("shard-00000.safetensors",
                                                                                 "shard-00001.safetensors")}
    before = _snapshot(store)

    report = compact_store(store.path)

    assert (report.shards_rewritten, report.shards_written, report.rows_copied) == (3, 1, 3)
    files = _shard_files(store)
    assert all(files[name] == stat for name, stat in full.items()), "full shards are not rewritten"
    assert len(files) == 3
    _assert_same_rows(store, before)


def test_an_empty_store_and_a_compact_store_are_no_ops(make_store, vec):
    empty = make_store(name="empty")
    report = compact_store(empty.path)
    assert not report.changed and report.shards_after == 0 and report.rows_kept == 0
    assert empty.verify().ok and len(empty) == 0

    store = make_store(name="compact", rows_per_shard=4)
    ids = [f"doc-{i}" for i in range(9)]
    store.append(ids, vec(ids))  # 4 + 4 + a tail of 1: nothing to merge, no garbage
    files, before = _shard_files(store), _snapshot(store)
    report = compact_store(store.path)
    assert not report.changed and report.rows_copied == 0 and report.shards_before == report.shards_after == 3
    assert _shard_files(store) == files
    _assert_same_rows(store, before)

    _tiny_commits(store, vec, ["late-0", "late-1"])
    assert compact_store(store.path).changed  # two partial shards do merge
    files = _shard_files(store)
    assert not compact_store(store.path).changed and _shard_files(store) == files  # and then it is compact


def test_target_shard_size(make_store, vec):
    store = make_store(rows_per_shard=4)
    ids = [f"doc-{i}" for i in range(5)]
    _tiny_commits(store, vec, ids)
    before = _snapshot(store)
    row_bytes = store.codec.row_bytes(store.dim)

    report = compact_store(store.path, target_shard_bytes=2 * row_bytes + 1)
    assert report.rows_per_shard == 2 and [s.rows for s in store.shards()] == [2, 2, 1]
    _assert_same_rows(store, before)
    # Larger than the store's rows_per_shard (fixed at create): shards of rows_per_shard rows.
    report = compact_store(store.path, target_shard_bytes=100 * row_bytes)
    assert report.rows_per_shard == 4 and [s.rows for s in store.shards()] == [4, 1]
    _assert_same_rows(store, before)
    with pytest.raises(StoreError, match="must be positive"):
        compact_store(store.path, target_shard_bytes=0)


def test_a_locked_store_is_refused_and_left_as_is(make_store, vec):
    store = make_store(rows_per_shard=4)
    _tiny_commits(store, vec, ["a", "b", "c"])
    files = _shard_files(store)
    with store.writer(), pytest.raises(StoreLockedError, match=str(store.path)):
        compact_store(store.path, lock_timeout_s=0.1)
    assert _shard_files(store) == files and len(store.shards()) == 3


def test_a_corrupt_row_stops_the_compaction_and_nothing_changes(make_store, vec):
    store = make_store(rows_per_shard=4)
    _tiny_commits(store, vec, ["a", "b", "c"])
    ids, refs, files = store.ids(), store._index.lookup(store.ids()), _shard_files(store)
    shard = store.path / "shards" / "shard-00001.safetensors"  # "b"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x01
    shard.write_bytes(bytes(data))

    with pytest.raises(CorruptShardError, match="'b'"):
        compact_store(store.path)
    assert store.ids() == ids and store._index.lookup(ids) == refs
    assert set(_shard_files(store)) == set(files), "the shards the compaction wrote are deleted"


# --- kill safety ----------------------------------------------------------------------------------------------

KILLED = """
import os, signal, sys, time
import gradient_store.writer as writer_module
from gradient_store import compact_store
path, point = sys.argv[1:3]
def die_at(name):
    if name == point:
        os.kill(os.getpid(), signal.SIGKILL)
def copying(rows):  # point "copying": tell the parent, then wait to be killed mid-copy
    print("copying", flush=True)
    time.sleep(120)
writer_module._CRASH_HOOK = die_at
compact_store(path, progress=copying if point == "copying" else None)
sys.exit(3)  # the hook (or the parent) should have killed us
"""


def _compactable(make_store, vec) -> GradientStore:
    """15 shards (13 of one row), 3 rows replaced: 19 rows, 16 live; compacted, 4 full shards and no garbage."""
    store = make_store(codec="int8", rows_per_shard=4)
    ids = [f"doc-{i}" for i in range(16)]
    _tiny_commits(store, vec, ids[:13])
    store.append(ids[13:], vec(ids[13:]))  # one shard of 3
    store.append(["doc-0", "doc-5", "doc-14"], vec(["x0", "x5", "x14"]), on_duplicate="replace")
    return store


@pytest.mark.parametrize(
    ("point", "compacted"),
    [
        ("copying", False),               # from outside, after the first rows were copied
        ("shard_renamed", False),         # a new shard in place, unregistered
        ("before_index_commit", False),   # every new shard in place, the switch not run
        ("index_committed", True),        # switched, no old file deleted
        ("compact_committed", True),
        ("compact_old_shard_deleted", True),  # one old file deleted, the others not
    ],
)
def test_sigkill_leaves_the_store_as_it_was_or_compacted(make_store, vec, point, compacted):
    store = _compactable(make_store, vec)
    old_shards = store.shards()
    before = _snapshot(store)

    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED), str(store.path), point],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if point == "copying":
        assert proc.stdout.readline() == "copying\n", proc.stderr.read()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]

    with GradientStore.open(store.path) as after:
        report = after.verify()
        assert report.ok, report.summary()
        assert report.warnings, "a killed compaction leaves unregistered files (new ones, or old ones)"
        if compacted:
            assert [s.rows for s in after.shards()] == [4, 4, 4, 4] and report.garbage_rows == 0
        else:
            assert after.shards() == old_shards and report.garbage_rows == 3
        _assert_same_rows(after, before)
    _assert_same_rows(store, before)  # the handle opened before the kill keeps serving

    # The next compaction (or writer) deletes the leftovers; a compacted store has nothing else to do.
    again = compact_store(store.path)
    assert again.changed != compacted
    with GradientStore.open(store.path) as final:
        report = final.verify()
        assert report.ok and not report.warnings and report.garbage_rows == 0
        assert [s.rows for s in final.shards()] == [4, 4, 4, 4]
        assert len(_shard_files(final)) == 4
        _assert_same_rows(final, before)


def test_a_crash_after_the_switch_is_cleaned_up_by_the_next_writer(make_store, vec, monkeypatch):
    store = _compactable(make_store, vec)
    before = _snapshot(store)

    def crash(name: str) -> None:
        if name == "compact_committed":
            raise KeyboardInterrupt  # in process: the switch is committed, no old file deleted yet

    monkeypatch.setattr(writer_module, "_CRASH_HOOK", crash)
    with pytest.raises(KeyboardInterrupt):
        compact_store(store.path)
    monkeypatch.setattr(writer_module, "_CRASH_HOOK", None)
    assert len(_shard_files(store)) == 4 + 15 and store.verify().ok
    with GradientStore.open(store.path) as writer_handle:
        writer_handle.append(["new"], vec(["new"]))  # a handle's first writer deletes unregistered files
        assert len(_shard_files(writer_handle)) == 5
        assert writer_handle.verify().ok and not writer_handle.verify().warnings
    assert store.ids() == before[0] + ["new"]


# --- readers across a compaction --------------------------------------------------------------------------------


@pytest.mark.parametrize("touched", [False, True])
def test_a_lookup_made_before_the_switch_finds_the_moved_rows(make_store, vec, touched):
    """The race, made deterministic: a reader's lookup returns refs to shards that the compaction then deletes."""
    store = _compactable(make_store, vec)
    ids = store.ids()
    reader = GradientStore.open(store.path, cache_bytes=0)
    try:
        expected = reader.sum(ids) if touched else store.sum(ids)
        if touched:
            reader._readers.clear()  # records known, maps dropped (as the LRU of open shards does)
        stale = reader._index.lookup(ids)
        compact_store(store.path)
        assert not any((store.path / "shards" / f"shard-{ref.shard_id:05d}.safetensors").exists()
                       for ref in stale.values())

        real_lookup, calls = reader._index.lookup, []

        def lookup_before_the_switch(wanted):
            calls.append(list(wanted))
            return {pid: stale[pid] for pid in wanted} if len(calls) == 1 else real_lookup(wanted)

        reader._index.lookup = lookup_before_the_switch
        result = reader.sum(ids, on_corrupt="raise")
        assert result.found_ids == ids and not result.missing_ids and not result.corrupt_ids
        assert torch.equal(result.vector, expected.vector)
        assert len(calls) == 2, "the ids whose shard was gone were looked up once more"
    finally:
        reader.close()


def test_a_really_missing_file_is_still_corrupt(make_store, vec):
    store = make_store(rows_per_shard=2)
    store.append(["a", "b", "c"], vec(["a", "b", "c"]))
    (store.path / "shards" / "shard-00000.safetensors").unlink()
    result = store.sum(["a", "c"])
    assert result.found_ids == ["c"] and result.corrupt_ids == ["a"]
    with pytest.raises(CorruptShardError, match="file is missing"):
        store.get(["b"], on_corrupt="raise")


# A reader process: opens the store once, then answers JSON commands on stdin, one per line.
READER = """
import json, os, sys
import torch
from gradient_store import GradientStore
store = GradientStore.open(sys.argv[1], expect_fingerprint=sys.argv[2], cache_bytes=0,
                           max_open_shards=int(sys.argv[3]))
real_lookup, pause = store._index.lookup, [False]
def lookup(ids):
    refs = real_lookup(ids)
    if pause[0]:  # report the refs found, then wait for the parent (which compacts meanwhile)
        pause[0] = False
        print(json.dumps({"looked_up": sorted({r.shard_id for r in refs.values()})}), flush=True)
        sys.stdin.readline()
    return refs
store._index.lookup = lookup
def deleted_maps():
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "shard-" in line and "(deleted)" in line)
print(json.dumps({"ready": len(store)}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "sum":
        pause[0] = cmd.get("pause", False)
        r = store.sum(cmd["ids"])
        print(json.dumps({"found": r.found_ids, "missing": r.missing_ids, "vector": r.vector.tolist(),
                          "deleted_maps": deleted_maps()}), flush=True)
    elif cmd["op"] == "watch":  # sum until the stop file appears; count answers that differ from the first
        first, sums, bad = store.sum(cmd["ids"]).vector, 0, 0
        print(json.dumps({"watching": True}), flush=True)
        while not os.path.exists(cmd["stop"]):
            r = store.sum(cmd["ids"])
            sums += 1
            bad += bool(r.missing_ids) or not torch.equal(r.vector, first)
        print(json.dumps({"sums": sums, "bad": bad}), flush=True)
"""


class Reader:
    def __init__(self, path: Path, max_open_shards: int = 256) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", READER, str(path), FINGERPRINT, str(max_open_shards)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.opened_with = self.reply()["ready"]

    def send(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"reader exited with {self.proc.wait(timeout=60)}"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0


@pytest.mark.parametrize("mapped", [False, True])
def test_a_reader_process_that_looked_up_before_the_switch_answers_right(make_store, vec, mapped):
    store = _compactable(make_store, vec)
    ids = store.ids()
    expected = store.sum(ids).vector
    old_shards = sorted({ref.shard_id for ref in store._index.lookup(ids).values()})
    reader = Reader(store.path)
    try:
        if mapped:  # the reader has every old shard mapped: it reads them after their deletion
            reader.send(op="sum", ids=ids)
            assert reader.reply()["found"] == ids
        reader.send(op="sum", ids=ids, pause=True)
        assert reader.reply()["looked_up"] == old_shards  # the refs name the old shards...
        assert compact_store(store.path).changed  # ...which the compaction now deletes
        assert not any((store.path / "shards" / f"shard-{i:05d}.safetensors").exists() for i in old_shards)
        reader.send(op="go")
        reply = reader.reply()
        assert (reply["found"], reply["missing"]) == (ids, [])
        assert torch.equal(torch.tensor(reply["vector"]), expected)
        if mapped:
            assert reply["deleted_maps"] > 0  # read from the maps of the deleted files, which stay valid
        # The next lookup maps the new shards, and the reader lets go of the deleted files (their disk space).
        reader.send(op="sum", ids=ids)
        reply = reader.reply()
        assert reply["found"] == ids and torch.equal(torch.tensor(reply["vector"]), expected)
        assert reply["deleted_maps"] == 0
    finally:
        reader.close()


def test_a_reader_process_keeps_answering_across_compactions(make_store, vec, tmp_path):
    store = make_store(codec="int8", rows_per_shard=4)
    ids = [f"doc-{i}" for i in range(10)]
    _tiny_commits(store, vec, ids)
    expected = store.sum(ids).vector
    reader = Reader(store.path, max_open_shards=1)  # maps opened and dropped at every read: the race is wide
    stop = tmp_path / "stop"
    try:
        reader.send(op="watch", ids=ids, stop=str(stop))
        assert reader.reply() == {"watching": True}
        for _ in range(6):
            # Replacing every id with its own value makes every shard garbage-holding: each compaction
            # moves every row and deletes every old file while the reader reads.
            store.append(ids, vec(ids), on_duplicate="replace")
            assert compact_store(store.path).changed
            assert torch.equal(store.sum(ids).vector, expected)
        stop.touch()
        seen = reader.reply()
        assert seen["sums"] > 0 and seen["bad"] == 0, seen
    finally:
        reader.close()
    assert store.verify().ok
