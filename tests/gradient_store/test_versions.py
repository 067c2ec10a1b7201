"""Format versions: a commit never touches `manifest.json` (version 2), and version-1 stores (whose manifest
also lists the shards) still read and verify, and are upgraded by their first writer."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gradient_store import FORMAT_VERSION, GradientStore


def _stat(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_ino, info.st_mtime_ns


def test_a_commit_neither_writes_the_manifest_nor_lists_the_shards(make_store, vec, monkeypatch):
    store = make_store(rows_per_shard=2)
    store.append(["a-0"], vec(["a-0"]))  # this handle's first writer: the one-off clean-up
    manifest = store.path / "manifest.json"
    before = _stat(manifest)

    listed: list[Path] = []
    for name in ("iterdir", "glob", "rglob"):
        original = getattr(Path, name)
        monkeypatch.setattr(Path, name, lambda self, *a, _o=original, **k: (listed.append(self), _o(self, *a, **k))[1])
    for i in range(5):  # one writer per commit, as POST /documents does
        store.append([f"b-{i}"], vec([f"b-{i}"]))
    with store.writer() as w:  # and one writer, many commits, shards flushed as they fill
        for i in range(3):
            w.append([f"c-{i}-0", f"c-{i}-1", f"c-{i}-2"], vec([f"c-{i}-0", f"c-{i}-1", f"c-{i}-2"]))
            w.commit()
    monkeypatch.undo()

    assert listed == []
    assert _stat(manifest) == before
    assert len(store) == 1 + 5 + 9 and len(store.shards()) == 1 + 5 + 6
    assert store.verify().ok


def _downgrade_to_v1(path: Path) -> dict:
    """Rewrite a store's manifest as version 1 wrote it: the header plus the index's shard list."""
    with sqlite3.connect(path / "index.sqlite") as db:
        rows = db.execute("SELECT shard_id, name, rows, bytes, sha256 FROM shards ORDER BY shard_id").fetchall()
    data = json.loads((path / "manifest.json").read_text())
    data["format_version"] = 1
    data["shards"] = [{"id": i, "name": n, "rows": r, "bytes": b, "sha256": s} for i, n, r, b, s in rows]
    (path / "manifest.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


def test_a_version_1_store_reads_verifies_and_is_upgraded_by_its_first_writer(make_store, vec):
    store = make_store(rows_per_shard=2)
    ids = [f"d{i}" for i in range(5)]
    store.append(ids, vec(ids))
    path = store.path
    store.close()
    v1 = _downgrade_to_v1(path)
    assert len(v1["shards"]) == 3

    with GradientStore.open(path) as old:
        assert old.manifest.format_version == 1 and [s.name for s in old.manifest.v1_shards] == [
            s.name for s in old.shards()
        ]
        assert old.sum(ids).found_ids == ids
        report = old.verify()
        assert report.ok and not report.warnings, report.summary()

        # Version 1's checks of the manifest's list against the index still run.
        lagging = {**v1, "shards": v1["shards"][:-1]}
        (path / "manifest.json").write_text(json.dumps(lagging))
        assert any("lags index.sqlite by 1 shard" in w for w in old.verify().warnings)
        wrong = {**v1, "shards": [{**v1["shards"][0], "sha256": "0" * 64}, *v1["shards"][1:]]}
        (path / "manifest.json").write_text(json.dumps(wrong))
        assert any("records it differently" in e for e in old.verify().errors)
        (path / "manifest.json").write_text(json.dumps(v1))

        old.append(["after"], vec(["after"]))  # the first writer upgrades the manifest...
        upgraded = json.loads((path / "manifest.json").read_text())
        assert upgraded["format_version"] == FORMAT_VERSION == 2 and "shards" not in upgraded
        assert upgraded == {k: v for k, v in v1.items() if k != "shards"} | {"format_version": 2}
        assert old.manifest.format_version == 2 and old.manifest.v1_shards == []
        assert not list(path.glob(".tmp-*"))
        after_upgrade = _stat(path / "manifest.json")
        old.append(["later"], vec(["later"]))  # ...once
        assert _stat(path / "manifest.json") == after_upgrade

    with GradientStore.open(path) as new:
        assert new.manifest.format_version == 2
        assert new.ids() == [*ids, "after", "later"]
        assert new.sum(ids).found_ids == ids
        report = new.verify()
        assert report.ok and not report.warnings, report.summary()


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("sha256", "'" + "0" * 64 + "'", "differs from the recorded 000000000000"),
        ("bytes", "bytes + 1", "the index records"),
    ],
)
def test_verify_checks_each_shard_against_the_index(make_store, vec, column, value, message):
    """A shard file whose size or sha256 differs from its row in the index's `shards` table fails verify."""
    store = make_store(rows_per_shard=2)
    ids = [f"e{i}" for i in range(4)]
    store.append(ids, vec(ids))
    assert store.verify().ok
    with sqlite3.connect(store.path / "index.sqlite") as db:
        db.execute(f"UPDATE shards SET {column} = {value} WHERE shard_id = 1")
    report = store.verify()
    assert not report.ok and report.corrupt_shards == ["shard-00001.safetensors"]
    assert message in report.errors[0], report.errors


def test_verify_catches_a_corrupted_shard(make_store, vec):
    store = make_store(rows_per_shard=2)
    ids = [f"f{i}" for i in range(4)]
    store.append(ids, vec(ids))
    shard = store.path / "shards" / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # inside the last row of the shard: f1's
    shard.write_bytes(bytes(data))
    report = store.verify()
    assert not report.ok and report.corrupt_shards == ["shard-00000.safetensors"] and report.corrupt_ids == ["f1"]
    assert "sha256" in report.errors[0] and "CRC32" in report.errors[0]
