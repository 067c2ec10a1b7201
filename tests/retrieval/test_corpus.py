"""Corpus readers: every format on the real shared files, stable ids, streaming and bad lines."""

from __future__ import annotations

import csv
import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from retrieval import CorpusFormatError, CorpusReader, detect_format, passage_id, read_corpus
from retrieval import corpus as corpus_module


def test_beir_corpus(scifact_dir: Path):
    reader = CorpusReader(scifact_dir / "corpus.jsonl")
    passages = list(reader)
    assert reader.format == "beir" and len(passages) == 5183 == reader.stats.passages
    first = json.loads((scifact_dir / "corpus.jsonl").open().readline())
    assert (passages[0].id, passages[0].title, passages[0].text) == (first["_id"], first["title"], first["text"])
    assert CorpusReader(scifact_dir).path.name == "corpus.jsonl"  # a BEIR folder works too


def test_flashrag_contents_are_split_into_title_and_text(shared_data: Path):
    path = shared_data / "flashrag_quickstart" / "wiki18_sample_corpus.jsonl"
    passages = list(read_corpus(path))
    first = json.loads(path.open().readline())
    assert len(passages) == 1000 and detect_format(path) == "jsonl"
    assert passages[0].id == first["id"]
    assert f'"{passages[0].title}"\n{passages[0].text}' == first["contents"]


def test_dpr_tsv_with_quotes_and_header(tmp_path: Path):
    path = tmp_path / "psgs_w100.tsv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["id", "text", "title"])
        writer.writerow(["1", 'Aaron is a "prophet"\tand high priest', "Aaron"])
        writer.writerow(["2", "Second passage.", "Title two"])
    passages = list(read_corpus(path))
    assert detect_format(path) == "dpr"
    assert [(p.id, p.title, p.text) for p in passages] == [
        ("1", "Aaron", 'Aaron is a "prophet"\tand high priest'), ("2", "Title two", "Second passage.")]
    gz = tmp_path / "psgs_w100.tsv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert [p.id for p in read_corpus(gz)] == ["1", "2"]


def test_ircot_paragraphs_get_one_stable_id_each(shared_data: Path):
    path = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl"
    passages = list(CorpusReader(path))
    first = json.loads(path.open().readline())["contexts"][0]
    assert passages[0].id == passage_id(first["title"], first["paragraph_text"])
    # The same paragraph under several questions: same id, same text.
    by_id: dict[str, set[str]] = {}
    for p in passages:
        by_id.setdefault(p.id, set()).add(p.text)
    assert len(by_id) < len(passages), "IRCoT repeats paragraphs across questions; ids must collapse them"
    assert all(len(texts) == 1 for texts in by_id.values())
    assert {p.id for p in CorpusReader(path)} == set(by_id)  # stable across reads


def test_hotpotqa_original_layout_matches_ircot_ids(shared_data: Path):
    hotpot = CorpusReader(shared_data / "hotpotqa" / "hotpot_dev_distractor_v1.first100.json")
    hotpot_ids = {p.id for p in hotpot}
    assert hotpot.format == "hotpotqa" and hotpot.stats.records == 80 and len(hotpot_ids) == 800
    ircot_ids = {p.id for p in CorpusReader(shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl")}
    # Sentence lists (HotpotQA) and joined paragraph_text (IRCoT) give the same ids once whitespace is
    # normalised; the few left are paragraphs whose text differs between the two sources.
    assert len(hotpot_ids & ircot_ids) / len(hotpot_ids) > 0.95


def test_2wiki_json_array(shared_data: Path):
    path = shared_data / "hipporag_2wikimultihopqa_corpus" / "2wikimultihopqa_corpus.json"
    records = json.loads(path.read_text())
    passages = list(CorpusReader(path))
    assert detect_format(path) == "2wiki" and len(passages) == len(records) == 6119
    assert passages[0].id == passage_id(records[0]["title"], records[0]["text"])


def test_json_array_memory_stays_flat(tmp_path: Path, monkeypatch):
    path = tmp_path / "big.json"
    records = [{"title": f"T{i}", "text": f"paragraph {i} " + "lorem-ipsum" * 100} for i in range(3000)]
    path.write_text(json.dumps(records))
    monkeypatch.setattr(corpus_module, "_CHUNK_CHARS", 1 << 15)
    reader = iter(CorpusReader(path))
    tracemalloc.start()
    try:
        count = sum(1 for _ in reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 3000
    assert peak < path.stat().st_size / 8, f"peak {peak} bytes while reading a {path.stat().st_size}-byte file"


def test_json_array_is_read_lazily(tmp_path: Path):
    path = tmp_path / "broken_at_the_end.json"
    path.write_text(json.dumps([{"title": "a", "text": "b"}] * 50)[:-1] + ", {oops}]")
    reader = iter(CorpusReader(path, format="2wiki"))
    assert [next(reader).title for _ in range(50)] == ["a"] * 50  # json.load would fail before the first
    with pytest.raises(CorpusFormatError, match="invalid JSON"):
        next(reader)


def test_json_array_elements_split_across_chunks(tmp_path: Path, monkeypatch):
    records = [{"title": f"T{i} \"quoted\" [x]", "text": "é" * (i % 13) + f" text {i}\n" + "," * i} for i in range(200)]
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False))
    monkeypatch.setattr(corpus_module, "_CHUNK_CHARS", 7)  # every element spans several reads
    got = list(CorpusReader(path, format="2wiki"))
    assert [p.title for p in got] == [r["title"] for r in records]
    assert got[5].text == " ".join(records[5]["text"].split())


def test_json_array_errors_name_the_line(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"title": "a", "text": "b"},\n{"title": "c", "text": }\n]')
    with pytest.raises(CorpusFormatError) as caught:
        list(CorpusReader(path, format="2wiki"))
    assert caught.value.line == 3 and str(path) in str(caught.value)
    path.write_text('[{"title": "a", "text": "b"},')
    with pytest.raises(CorpusFormatError, match="ends early"):
        list(CorpusReader(path, format="2wiki"))


def test_malformed_line_raises_with_file_and_line(tmp_path: Path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n\n{"_id": "3", "title": "no text"}\n'
                    '{"_id": "4", "text": "fine"}\n')
    with pytest.raises(CorpusFormatError) as caught:
        list(read_corpus(path, format="jsonl"))
    assert (caught.value.path, caught.value.line) == (str(path), 2)
    assert f"{path}:2:" in str(caught.value) and "--skip-bad-lines" in str(caught.value)

    reader = CorpusReader(path, format="jsonl", skip_bad_lines=True)
    assert [p.id for p in reader] == ["1", "4"]
    assert reader.stats.skipped == 2 and reader.stats.errors[1].startswith(f"{path}:4:")


def test_missing_id_falls_back_to_a_content_hash(tmp_path: Path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"title": "T", "text": "body"}\n{"id": 7, "text": "numeric id"}\n')
    assert [p.id for p in read_corpus(path)] == [passage_id("T", "body"), "7"]


def test_unknown_format_and_missing_file(tmp_path: Path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"question": "no passages here"}\n')
    with pytest.raises(CorpusFormatError, match="--format"):
        CorpusReader(path)
    with pytest.raises(CorpusFormatError, match="no such file"):
        CorpusReader(tmp_path / "absent.jsonl")
    with pytest.raises(CorpusFormatError, match="unknown format"):
        CorpusReader(path, format="parquet")


def test_passage_id_ignores_whitespace_only():
    assert passage_id("Ed  Wood", " Ed Wood was\na filmmaker. ") == passage_id("Ed Wood", "Ed Wood was a filmmaker.")
    assert passage_id("Ed Wood", "x") != passage_id("Ed Wood (film)", "x")
    assert len(passage_id("a", "b")) == 16


def test_pubmedqa_abstracts_are_one_passage_per_pmid(shared_data: Path):
    path = shared_data / "pubmedqa" / "ori_pqal.json"
    items = json.loads(path.read_text())
    reader = CorpusReader(path)
    passages = {p.id: p for p in reader}
    assert reader.format == "pubmedqa" and len(passages) == len(items) == reader.stats.passages
    pmid, item = next(iter(items.items()))
    passage = passages[f"pubmed-{pmid}"]
    assert passage.text == " ".join(" ".join(item["CONTEXTS"]).split())
    assert item["LONG_ANSWER"][:60] not in passage.text  # the conclusion states the answer: left out


def test_bioasq_snippets_are_deduplicated_passages(shared_data: Path, tmp_path: Path):
    path = shared_data / "bioasq" / "10B1_golden.json"
    questions = json.loads(path.read_text())["questions"]
    snippets = [s for q in questions for s in q["snippets"]]
    reader = CorpusReader(path)
    passages = list(reader)
    assert reader.format == "bioasq" and reader.stats.records == len(questions)
    assert len(passages) == len(snippets)  # one per snippet read; repeats share an id (the index keeps one)
    first = snippets[0]
    assert passages[0].title == "PubMed " + first["document"].rsplit("/", 1)[-1]
    assert passages[0].text == " ".join(first["text"].split())
    assert passages[0].id == passage_id(passages[0].title, passages[0].text)
    pretty = tmp_path / "pretty.json"  # a pretty-printed file is detected too
    pretty.write_text(json.dumps({"questions": questions[:2]}, indent=2))
    assert detect_format(pretty) == "bioasq" and len(list(read_corpus(pretty))) == sum(
        len(q["snippets"]) for q in questions[:2])


def test_document_formats_name_the_bad_record(tmp_path: Path):
    path = tmp_path / "ori_pqal.json"
    path.write_text(json.dumps({"1": {"CONTEXTS": ["Fine abstract."]}, "2": {"QUESTION": "no contexts?"},
                                "3": {"CONTEXTS": ["Also fine."]}}))
    with pytest.raises(CorpusFormatError, match="PMID 2: missing `CONTEXTS`") as caught:
        list(CorpusReader(path))
    assert caught.value.line is None and "--skip-bad-lines" in str(caught.value)
    reader = CorpusReader(path, skip_bad_lines=True)
    assert [p.id for p in reader] == ["pubmed-1", "pubmed-3"]
    assert reader.stats.skipped == 1 and reader.stats.errors == [f"{path}: PMID 2: missing `CONTEXTS`"]
    path.write_text('[{"CONTEXTS": ["an array, not a PubMedQA object"]}]')
    with pytest.raises(CorpusFormatError, match="PubMedQA"):
        list(CorpusReader(path, format="pubmedqa"))
    path.write_text('{"questions": [{"id": "q1", "snippets": [{"document": "x"}]}]}')
    with pytest.raises(CorpusFormatError, match="question q1: each snippet needs a string `text`"):
        list(CorpusReader(path))
