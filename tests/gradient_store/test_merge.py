"""`merge_stores` / `regrad store merge`: one learner and codec only, append's duplicate rules, one atomic commit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from cli.main import main
from gradient_store import (
    DuplicateIdError,
    FingerprintMismatchError,
    GradientStore,
    StoreMismatchError,
    merge_stores,
)

from .conftest import raw_rows as _raw_rows


@pytest.mark.parametrize("codec", ["bf16", "int8", "fp32", "lowrank4"])
def test_merge_copies_every_row_bit_for_bit_into_a_new_store(make_store, vec, tmp_path, codec):
    a, b = make_store(codec=codec, name="a", rows_per_shard=3), make_store(codec=codec, name="b", rows_per_shard=5)
    a.append([f"a{i}" for i in range(7)], vec([f"a{i}" for i in range(7)]))
    b.append([f"b{i}" for i in range(4)], vec([f"b{i}" for i in range(4)]))

    report = merge_stores([a.path, b.path], tmp_path / "merged")

    assert report.rows_copied == 11 and report.duplicates == 0 and report.store_rows == 11
    with GradientStore.open(tmp_path / "merged", expect_fingerprint=a.fingerprint) as merged:
        assert merged.codec.name == codec and merged.layout == a.layout
        assert merged.ids() == [f"a{i}" for i in range(7)] + [f"b{i}" for i in range(4)]
        assert merged.verify().ok
        expected = {**_raw_rows(a), **_raw_rows(b)}
        assert _raw_rows(merged) == expected  # stored bytes, not re-encoded values


def test_merge_into_an_existing_store_keeps_its_rows(make_store, vec):
    dst, src = make_store(name="dst"), make_store(name="src")
    dst.append(["d0", "d1"], vec(["d0", "d1"]))
    src.append(["s0", "s1", "s2"], vec(["s0", "s1", "s2"]))
    merge_stores([src.path], dst.path)
    assert dst.ids() == ["d0", "d1", "s0", "s1", "s2"]
    assert torch.equal(dst.get(["s1"])["s1"], src.get(["s1"])["s1"])


def test_a_store_of_another_learner_is_refused_and_dst_is_untouched(make_store, vec, tmp_path, layout):
    dst = make_store(name="dst")
    dst.append(["d0"], vec(["d0"]))
    other = GradientStore.create(tmp_path / "other", layout=layout, fingerprint="cd" * 32, rows_per_shard=4)
    other.append(["o0"], vec(["o0"]))
    other.close()
    with pytest.raises(FingerprintMismatchError, match="re-encode"):
        merge_stores([tmp_path / "other"], dst.path)
    assert dst.ids() == ["d0"]

    code = main(["store", "merge", str(tmp_path / "other"), "--into", str(dst.path), "--no-progress"])
    assert code == 4  # ExitStatus.MISMATCH, as for serving a store of another learner


def test_another_codec_or_layout_is_refused_with_exit_4(make_store, vec, tmp_path, capsys):
    bf16, int8 = make_store(name="bf16"), make_store(codec="int8", name="int8")
    bf16.append(["x"], vec(["x"]))
    int8.append(["y"], vec(["y"]))
    with pytest.raises(StoreMismatchError, match=r"codec 'int8', expected 'bf16'"):
        merge_stores([bf16.path, int8.path], tmp_path / "merged")
    assert not (tmp_path / "merged").exists(), "a refused merge creates nothing"

    code = main(["store", "merge", str(bf16.path), str(int8.path), "--into", str(tmp_path / "m"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 4 and "codec 'int8', expected 'bf16'" in err and "Traceback" not in err

    wider = GradientStore.create(tmp_path / "wide", fingerprint=bf16.fingerprint, rows_per_shard=4,
                                 layout=[{"name": "t", "shape": [10, 50], "offset": 0}])
    wider.close()
    with pytest.raises(StoreMismatchError, match="dimension 500, expected 1000"):
        merge_stores([bf16.path, tmp_path / "wide"], tmp_path / "merged")
    renamed = GradientStore.create(tmp_path / "renamed", fingerprint=bf16.fingerprint, rows_per_shard=4,
                                   layout=[{"name": "t", "shape": [10, 100], "offset": 0}])
    renamed.close()
    with pytest.raises(StoreMismatchError, match=r"layout\[0\] = 't \[10, 100\]'"):
        merge_stores([bf16.path, tmp_path / "renamed"], tmp_path / "merged")


def test_duplicates_follow_the_rules_of_append(make_store, vec, tmp_path):
    a, b = make_store(name="a"), make_store(name="b")
    a.append(["x", "y"], vec(["x", "y"]))
    b.append(["y", "z"], vec(["y", "z"]) * 2)  # y differs between the two

    with pytest.raises(DuplicateIdError, match="'y'"):
        merge_stores([a.path, b.path], tmp_path / "err")
    assert not (tmp_path / "err").exists(), "a refused merge leaves no store it created"
    dst = make_store(name="dst")
    dst.append(["w"], vec(["w"]))
    with pytest.raises(DuplicateIdError, match="'y'"):
        merge_stores([a.path, b.path], dst.path)
    assert dst.ids() == ["w"] and dst.verify().ok and not dst.verify().warnings  # nothing of it is visible

    report = merge_stores([a.path, b.path], tmp_path / "skip", on_duplicate="skip")
    assert (report.rows_copied, report.duplicates, report.store_rows) == (3, 1, 3)
    with GradientStore.open(tmp_path / "skip") as skip:
        assert torch.equal(skip.get(["y"])["y"], a.get(["y"])["y"])  # the first one stays

    report = merge_stores([a.path, b.path], tmp_path / "replace", on_duplicate="replace")
    assert (report.duplicates, report.store_rows) == (1, 3)
    with GradientStore.open(tmp_path / "replace") as replace:
        assert torch.equal(replace.get(["y"])["y"], b.get(["y"])["y"])  # the last one wins
        assert replace.verify().ok


def test_the_cli_merges_and_reports(make_store, vec, tmp_path, capsys):
    a, b = make_store(name="a"), make_store(name="b")
    a.append(["x"], vec(["x"]))
    b.append(["x", "z"], vec(["x", "z"]))
    assert main(["store", "merge", str(a.path), str(b.path), "--into", str(tmp_path / "m"),
                 "--on-duplicate", "skip", "--verify", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows_copied"] == 2 and report["duplicates"] == 1 and report["verify_ok"] is True

    assert main(["store", "merge", str(a.path), "--into", str(a.path), "--no-progress"]) != 0
    assert "both a source and the destination" in capsys.readouterr().err


MERGE_CHILD = """
import os, signal, sys
import gradient_store.writer as writer_module
from gradient_store import merge_stores
point, dst, *sources = sys.argv[1:]
def die_at(name):
    if name == point:
        os.kill(os.getpid(), signal.SIGKILL)
writer_module._CRASH_HOOK = die_at
merge_stores(sources, dst)
sys.exit(3)  # the hook should have killed us
"""


@pytest.mark.parametrize(
    ("point", "complete"),
    [("shard_renamed", False), ("before_index_commit", False), ("index_committed", True)],
)
def test_sigkill_mid_merge_leaves_dst_as_it_was_or_complete(make_store, vec, point, complete):
    """A real SIGKILL of a merging process at each step of its commit: DST is never half merged."""
    dst = make_store(name="dst", rows_per_shard=2)
    dst.append(["d0", "d1", "d2"], vec(["d0", "d1", "d2"]))
    sources = []
    for s in range(3):
        src = make_store(name=f"src{s}", rows_per_shard=3)
        ids = [f"s{s}-{i}" for i in range(5)]
        src.append(ids, vec(ids))
        sources.append(src)
    merged_ids = [f"s{s}-{i}" for s in range(3) for i in range(5)]

    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(MERGE_CHILD), point, str(dst.path),
                           *[str(s.path) for s in sources]], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    with GradientStore.open(dst.path) as after:
        assert after.ids() == ["d0", "d1", "d2"] + (merged_ids if complete else [])
        assert after.verify().ok
        if not complete:
            assert after.verify().warnings, "the killed merge had flushed shards that must stay invisible"
    # The next merge recovers and completes (skip: a complete one is a no-op).
    merge_stores([s.path for s in sources], dst.path, on_duplicate="skip")
    with GradientStore.open(dst.path) as final:
        assert final.ids() == ["d0", "d1", "d2"] + merged_ids
        report = final.verify()
        assert report.ok and not report.warnings
        got = final.get(merged_ids)
        expected = vec(merged_ids)
        for i, pid in enumerate(merged_ids):
            assert torch.allclose(got[pid], expected[i], rtol=2**-7, atol=1e-9), pid


def test_a_corrupt_source_row_stops_the_merge_and_dst_is_unchanged(make_store, vec, capsys):
    from gradient_store import CorruptShardError

    dst, src = make_store(name="dst"), make_store(name="src", rows_per_shard=8)
    dst.append(["d0"], vec(["d0"]))
    src.append(["s0", "s1", "s2"], vec(["s0", "s1", "s2"]))
    shard = next((src.path / "shards").glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the last row (s2)
    shard.write_bytes(bytes(data))

    with pytest.raises(CorruptShardError, match="'s2'"):
        merge_stores([src.path], dst.path)
    assert dst.ids() == ["d0"] and not dst.verify().warnings
    assert main(["store", "merge", str(src.path), "--into", str(dst.path), "--no-progress"]) == 5
    assert "regrad store verify" in capsys.readouterr().err
