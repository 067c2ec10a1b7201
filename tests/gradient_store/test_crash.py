"""SIGKILL the writer (a child process) anywhere: the store still opens, verifies and accepts appends."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from gradient_store import GradientStore

CHILD = """
import os, signal, sys, zlib
import torch
import gradient_store.writer as writer_module
from gradient_store import GradientStore
{recipe}
path, mode, arg = sys.argv[1:4]
store = GradientStore.open(path)
if mode == "point":  # die at one named step of the commit protocol
    def die_at(name):
        if name == arg:
            os.kill(os.getpid(), signal.SIGKILL)
    writer_module._CRASH_HOOK = die_at
    ids = [f"late-{{i}}" for i in range(5)]
    store.append(ids, vectors_for(ids))
    sys.exit(3)  # the hook should have killed us
else:  # append batches of 3 until killed from outside
    k = 0
    while True:
        ids = [f"{{arg}}-{{k}}-{{i}}" for i in range(3)]
        store.append(ids, vectors_for(ids))
        print(k, flush=True)
        k += 1
"""


def _child(recipe: str, path, mode: str, arg: str) -> list[str]:
    return [sys.executable, "-c", CHILD.format(recipe=textwrap.dedent(recipe)), str(path), mode, arg]


def _check_store(store: GradientStore, vec) -> None:
    """Opens, verifies, and every visible row is exactly what was appended for its id."""
    report = store.verify()
    assert report.ok, report.summary()
    ids = store.ids()
    if ids:
        got = store.get(ids)
        assert set(got) == set(ids)
        expected = vec(ids)
        for i, pid in enumerate(ids):
            assert torch.allclose(got[pid], expected[i], rtol=2**-7, atol=1e-9), pid


@pytest.mark.parametrize(
    ("point", "committed"),
    [("shard_written", False), ("shard_renamed", False), ("before_index_commit", False), ("index_committed", True)],
)
def test_sigkill_at_each_step_of_a_commit(make_store, vec, vector_recipe, point, committed):
    store = make_store(rows_per_shard=2)
    store.append(["early-0", "early-1", "early-2"], vec(["early-0", "early-1", "early-2"]))

    proc = subprocess.run(_child(vector_recipe, store.path, "point", point), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    # The handle opened before the crash keeps serving, and so does a fresh one.
    assert store.sum(["early-1"]).found_ids == ["early-1"]
    with GradientStore.open(store.path) as after:
        late = [f"late-{i}" for i in range(5)]
        assert after.ids() == ["early-0", "early-1", "early-2"] + (late if committed else [])
        _check_store(after, vec)
        leftovers = after.verify().warnings
        # Killed before its transaction, a commit leaves unregistered files; after it, nothing at all
        # (the manifest is not part of a commit).
        assert bool(leftovers) != committed, leftovers

        after.append(["after-0"], vec(["after-0"]))  # the next writer recovers...
        report = after.verify()
        assert report.ok and not report.warnings, report.summary()  # ...and leaves nothing behind
        _check_store(after, vec)
        assert after.ids()[-1] == "after-0"


def test_a_handle_that_already_wrote_reuses_the_name_a_crash_left(make_store, vec, vector_recipe):
    """Only a handle's first writer lists `shards/`; a later one overwrites an unregistered shard it reaches."""
    store = make_store(rows_per_shard=2)
    store.append(["early-0", "early-1"], vec(["early-0", "early-1"]))  # this handle's writer has cleaned up
    proc = subprocess.run(_child(vector_recipe, store.path, "point", "shard_renamed"), capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (store.path / "shards" / "shard-00001.safetensors").is_file()  # renamed, never registered

    store.append(["old-handle"], vec(["old-handle"]))  # writes shard-00001 over the orphan
    assert [s.name for s in store.shards()] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    report = store.verify()
    assert report.ok and not report.warnings, report.summary()
    _check_store(store, vec)
    assert store.ids() == ["early-0", "early-1", "old-handle"]


def test_sigkill_at_random_moments(make_store, vec, vector_recipe):
    store = make_store(rows_per_shard=2)
    rng = random.Random(1234)
    batches_seen = 0
    for round_ in range(3):
        proc = subprocess.Popen(_child(vector_recipe, store.path, "loop", f"r{round_}"), stdout=subprocess.PIPE)
        try:
            for _ in range(2):  # let it get into its stride (imports done, commits flowing)
                assert proc.stdout.readline(), "writer child died early"
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            proc.kill()
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL

        with GradientStore.open(store.path) as after:
            _check_store(after, vec)
            ids = [pid for pid in after.ids() if pid.startswith("r")]
            # Every batch of 3 was committed whole or not at all, and the child got somewhere.
            batches = {pid.rsplit("-", 1)[0] for pid in ids}
            assert len(ids) == 3 * len(batches)
            assert len(batches) >= batches_seen + 2
            batches_seen = len(batches)
            after.append([f"after-{round_}"], vec([f"after-{round_}"]))
            assert after.verify().ok
