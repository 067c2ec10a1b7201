"""`regrad store info|verify|compact DIR`: figures on stdout, exit 0 on a good store, non-zero on a flipped byte;
compact's report and its one-line errors."""

from __future__ import annotations

import argparse
import json
import struct

import pytest
import torch

from cli.commands import store as store_command
from offline_tools.errors import ExitStatus, RegradError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="regrad")
    store_command.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def good_store(make_store, vec):
    store = make_store(rows_per_shard=2)
    store.append(["a", "b", "c"], vec(["a", "b", "c"]))
    return store


def test_info_prints_the_figures(good_store, capsys):
    assert store_command.run_info(_parse(["store", "info", str(good_store.path), "--json"])) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["passages"] == 3 and info["codec"] == "bf16" and info["fingerprint"] == good_store.fingerprint
    assert info["bytes_per_passage"] == pytest.approx(info["size_on_disk_bytes"] / 3)

    args = _parse(["store", "info", str(good_store.path)])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    for label in ("passages", "codec", "size on disk", "bytes/passage", "fingerprint"):
        assert label in table
    assert good_store.fingerprint in table


def test_verify_exit_status(good_store, capsys):
    args = _parse(["store", "verify", str(good_store.path), "--no-progress"])
    assert args.func(args) == 0
    assert "OK" in capsys.readouterr().out

    shard = good_store.path / "shards" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[8 + struct.unpack("<Q", data[:8])[0] + 5] ^= 0x01  # one bit of row 0 ("c")
    shard.write_bytes(bytes(data))
    with pytest.raises(RegradError) as err:
        args.func(args)
    assert err.value.exit_status == ExitStatus.CORRUPT
    assert "shard-00001.safetensors" in str(err.value)
    assert "'c'" in capsys.readouterr().out


def test_through_the_regrad_entry_point(good_store, capsys):
    from cli.main import main

    assert main(["store", "verify", str(good_store.path), "--no-progress"]) == 0
    (good_store.path / "shards" / "shard-00000.safetensors").write_bytes(b"\0" * 64)
    assert main(["store", "verify", str(good_store.path), "--no-progress"]) == ExitStatus.CORRUPT
    err = capsys.readouterr().err
    assert err.startswith("regrad: error: ") and "Traceback" not in err
    assert main(["store", "info", str(good_store.path.parent / "missing")]) != 0


def test_compact_prints_a_report_and_compacts(make_store, vec, capsys):
    from cli.main import main

    store = make_store(rows_per_shard=4)
    for pid in ["a", "b", "c", "d", "e"]:
        store.append([pid], vec([pid]))
    store.append(["b"], vec(["b2"]), on_duplicate="replace")
    expected = store.get(store.ids())

    assert main(["store", "compact", str(store.path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert str(store.path) in out and "6 -> 2 shard(s)" in out and "1 garbage row(s) dropped" in out
    info = store.info()
    assert (info["shards"], info["garbage_rows"], info["passages"]) == (2, 0, 5)
    got = store.get(store.ids())
    assert all(torch.equal(got[pid], expected[pid]) for pid in expected)

    assert main(["store", "compact", str(store.path), "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["changed"] is False and report["shards_after"] == 2
    assert main(["store", "compact", str(store.path), "--no-progress"]) == 0
    assert "already compact" in capsys.readouterr().out


def test_compact_target_shard_mb(make_store, vec, capsys):
    from cli.main import main

    store = make_store(rows_per_shard=100)  # bf16, D = 1000: 2,000 bytes a row, 524 rows in one MiB
    ids = [f"doc-{i}" for i in range(3)]
    for pid in ids:
        store.append([pid], vec([pid]))
    assert main(["store", "compact", str(store.path), "--target-shard-mb", "0.002", "--no-progress"]) == 0
    assert [s.rows for s in store.shards()] == [1, 1, 1]  # 2,097 bytes: one row per shard, no merge
    assert "already compact" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["store", "compact", str(store.path), "--target-shard-mb", "0"])
    assert "positive number" in capsys.readouterr().err


def test_compact_errors_are_one_line(make_store, vec, tmp_path, capsys):
    from cli.main import main

    missing = tmp_path / "nowhere"
    assert main(["store", "compact", str(missing), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("regrad: error: ") and str(missing) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    not_a_store = tmp_path / "plain"
    not_a_store.mkdir()
    assert main(["store", "compact", str(not_a_store), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert str(not_a_store) in err and "not a gradient store" in err and "Traceback" not in err

    store = make_store(rows_per_shard=4)
    for pid in ["a", "b"]:
        store.append([pid], vec([pid]))
    with store.writer():  # another writer holds the lock
        code = main(["store", "compact", str(store.path), "--lock-timeout", "0.1", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and str(store.path) in err and "writer.lock" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert len(store.shards()) == 2  # untouched
