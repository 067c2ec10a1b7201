"""`regrad store info|verify DIR`: figures on stdout, exit 0 on a good store, non-zero on a flipped byte."""

from __future__ import annotations

import argparse
import json
import struct

import pytest

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
