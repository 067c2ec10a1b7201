"""`regrad index` and `regrad search` end to end (tantivy), including errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from cli.main import main
from offline_tools.errors import ExitStatus


def test_index_several_files_then_search(tmp_path: Path, shared_data: Path, capsys):
    index = tmp_path / "index"
    ircot = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl"
    hotpot = shared_data / "hotpotqa" / "hotpot_dev_distractor_v1.first100.json"
    status = main(["index", "--corpus", str(ircot), "--corpus", str(hotpot), "--index", str(index), "--json",
                   "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and [f["format"] for f in report["files"]] == ["ircot", "hotpotqa"]
    assert report["sent"] == 3939 + 800 and report["count_after"] < report["sent"]  # shared paragraphs once

    status = main(["index", "--corpus", str(hotpot), "--index", str(index), "--json", "--no-progress"])
    again = json.loads(capsys.readouterr().out)
    assert status == 0 and again["count_after"] == report["count_after"]  # re-indexing adds nothing

    status = main(["search", "--index", str(index), "--query", "Scott Derrickson nationality", "--k", "3",
                   "--json"])
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert status == 0 and len(hits) == 3 and hits[0]["title"] == "Scott Derrickson"

    status = main(["search", "--index", str(index), "--query", "Ed Wood", "--k", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert status == 0 and len(lines) == 2 and lines[0].lstrip().startswith("1")


def test_queries_to_stdout(tmp_path: Path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "title": "Zebras", "text": "Zebras have stripes."}\n'
                      '{"_id": "d2", "title": "Lions", "text": "Lions have manes."}\n')
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "striped zebra"}\n{"_id": "q2", "text": "AND (("}\n')
    assert main(["index", "--corpus", str(corpus), "--index", str(tmp_path / "i"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "i"), "--queries", str(queries), "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["query_id"] == "q1" and rows[0]["hits"][0]["id"] == "d1"
    assert rows[1] == {"query_id": "q2", "hits": []}


def test_malformed_corpus_exits_with_input_status(tmp_path: Path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "ok"}\nnot json\n{"_id": "3", "text": "ok too"}\n')
    status = main(["index", "--corpus", str(corpus), "--index", str(tmp_path / "i"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == ExitStatus.INPUT and f"{corpus}:2:" in err and "Traceback" not in err

    status = main(["index", "--corpus", str(corpus), "--index", str(tmp_path / "i"), "--skip-bad-lines",
                   "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0 and "skipped 1 malformed records" in captured.err and "2 documents" in captured.out


def test_usage_errors(tmp_path: Path, capsys):
    assert main(["search", "--index", str(tmp_path / "absent"), "--query", "x"]) == ExitStatus.INPUT
    assert main(["index", "--corpus", "c.jsonl", "--index", "wiki", "--backend", "elasticsearch"]) == ExitStatus.USAGE
    assert "--es-url" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path), "--query", "x", "--k", "0"]) == ExitStatus.USAGE


def test_unreachable_elasticsearch_exits_unavailable(tmp_path: Path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "ok"}\n')
    status = main(["index", "--corpus", str(corpus), "--index", "wiki", "--backend", "elasticsearch",
                   "--es-url", f"http://127.0.0.1:{port}", "--no-progress"])
    err = capsys.readouterr().err
    assert status == ExitStatus.UNAVAILABLE and "unavailable" in err and "Traceback" not in err


def test_a_folder_corpus_is_its_files_in_name_order(tmp_path: Path, capsys):
    folder = tmp_path / "batches"
    folder.mkdir()
    (folder / "b.jsonl").write_text('{"_id": "d2", "title": "Lions", "text": "Lions have manes."}\n')
    (folder / "a.jsonl").write_text('{"_id": "d1", "title": "Zebras", "text": "Zebras have stripes."}\n')
    (folder / ".hidden").write_text("not a corpus\n")
    status = main(["index", "--corpus", str(folder), "--index", str(tmp_path / "i"), "--json", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and [Path(f["path"]).name for f in report["files"]] == ["a.jsonl", "b.jsonl"]
    assert report["count_after"] == 2
    assert main(["search", "--index", str(tmp_path / "i"), "--query", "lion manes", "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == "d2"

    empty = tmp_path / "empty"
    empty.mkdir()
    status = main(["index", "--corpus", str(empty), "--index", str(tmp_path / "j"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == ExitStatus.INPUT and "empty folder" in err and "Traceback" not in err
