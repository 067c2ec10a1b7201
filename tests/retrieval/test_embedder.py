"""The embedder honours a sentence-transformers folder: pooling, Normalize, max_seq_length, prompts.

Every folder here is a tiny random BERT (hidden 32, 2 layers, a 24-word vocabulary) written to
tmp_path with hand-written sentence-transformers files; the expected vectors come from running the
same transformers model directly, one text at a time (so padding in the embedder's batches must
be masked out to match).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval import DenseRetriever, Embedder, Passage, RetrievalError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "query", "passage", "classify", ":", "the", "cat",
         "sat", "on", "mat", "a", "red", "dog", "ran", "far", "away", "fruit", "is", "sweet", "."]
TEXTS = ["the cat sat on the mat .", "a red dog", "fruit is sweet"]  # different lengths: one padded batch
POOLING_FLAGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                 "max": "pooling_mode_max_tokens", "lasttoken": "pooling_mode_lasttoken",
                 "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens"}
PROMPTS = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Hugging Face folder: random 2-layer BERT + a WordPiece tokenizer over WORDS.

    Weights drawn with std 0.5 (not 0.02) so that different inputs give clearly different vectors.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.5)
    BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hidden_states(base_model: Path):
    """text -> (last hidden state `[tokens, 32]`, input ids) from the transformers model itself, unbatched."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModel.from_pretrained(base_model).eval()

    def run(text: str, max_length: int | None = None) -> tuple[np.ndarray, list[int]]:
        encoded = tokenizer(text, return_tensors="pt", truncation=max_length is not None, max_length=max_length)
        assert encoded["input_ids"][0, 1:-1].ne(1).all(), f"{text!r} has a word outside WORDS"
        with torch.inference_mode():
            return model(**encoded).last_hidden_state[0].numpy(), encoded["input_ids"][0].tolist()

    return run


def st_folder(base: Path, dest: Path, pooling: str | dict = "mean", normalize: bool = False,
              max_seq_length: int | None = None, prompts: dict | None = None,
              default_prompt_name: str | None = None, extra_modules: tuple = ()) -> Path:
    """`base` plus sentence-transformers files: modules.json, 1_Pooling/config.json, optional Normalize."""
    shutil.copytree(base, dest)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    modules += [{"idx": len(modules) + i, **m} for i, m in enumerate(extra_modules)]
    (dest / "modules.json").write_text(json.dumps(modules))
    flags = {flag: False for flag in POOLING_FLAGS.values()}
    flags.update({POOLING_FLAGS[pooling]: True} if isinstance(pooling, str) else pooling)
    (dest / "1_Pooling").mkdir()
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))
    if max_seq_length is not None:
        (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                     "do_lower_case": False}))
    if prompts is not None:
        (dest / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": prompts, "default_prompt_name": default_prompt_name}))
    return dest


def _pool(hidden: np.ndarray, mode: str) -> np.ndarray:
    """The reference pooling of ONE unpadded text's hidden states."""
    return {"cls": lambda h: h[0], "mean": lambda h: h.mean(0), "max": lambda h: h.max(0),
            "lasttoken": lambda h: h[-1], "mean_sqrt_len_tokens": lambda h: h.sum(0) / np.sqrt(len(h))}[mode](hidden)


@pytest.mark.parametrize("mode", ["cls", "mean", "max", "lasttoken", "mean_sqrt_len_tokens"])
def test_pooling_mode_from_the_pooling_config(base_model: Path, hidden_states, tmp_path: Path, mode: str):
    embedder = Embedder(st_folder(base_model, tmp_path / mode, pooling=mode))
    assert embedder.settings.pooling == mode and not embedder.settings.normalize
    got = embedder.embed(TEXTS)  # one batch: the shorter texts are padded
    for text, vector in zip(TEXTS, got, strict=True):
        hidden, _ = hidden_states(text)
        np.testing.assert_allclose(vector, _pool(hidden, mode), rtol=1e-4, atol=1e-5, err_msg=f"{mode} {text!r}")
        assert all(not np.allclose(vector, _pool(hidden, m), atol=1e-3) for m in POOLING_FLAGS if m != mode)


def test_cls_pooling_is_exactly_the_cls_hidden_state(base_model: Path, hidden_states, tmp_path: Path):
    embedder = Embedder(st_folder(base_model, tmp_path / "bge_like", pooling="cls"))
    hidden, ids = hidden_states("a red dog")
    assert ids[0] == WORDS.index("[CLS]")
    np.testing.assert_allclose(embedder.embed(["a red dog"])[0], hidden[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(embedder.embed(["a red dog"])[0], hidden.mean(0), atol=1e-3)  # not mean pooling


def test_normalise_only_when_the_normalize_module_is_listed(base_model: Path, hidden_states, tmp_path: Path):
    plain = Embedder(st_folder(base_model, tmp_path / "plain", pooling="mean", normalize=False)).embed(TEXTS)
    unit = Embedder(st_folder(base_model, tmp_path / "unit", pooling="mean", normalize=True)).embed(TEXTS)
    means = np.stack([hidden_states(t)[0].mean(0) for t in TEXTS])
    np.testing.assert_allclose(plain, means, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(np.linalg.norm(plain, axis=1) - 1) > 0.1)  # left as pooled
    np.testing.assert_allclose(unit, means / np.linalg.norm(means, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_folder_without_modules_json_keeps_mean_and_normalise(base_model: Path, hidden_states, caplog):
    with caplog.at_level(logging.WARNING, logger="regrad.retrieval"):
        embedder = Embedder(base_model)
    assert "no modules.json" in caplog.text and "mean pooling + L2 normalisation" in caplog.text
    mean = hidden_states("a red dog")[0].mean(0)
    np.testing.assert_allclose(embedder.embed(["a red dog"])[0], mean / np.linalg.norm(mean), rtol=1e-4, atol=1e-5)


def test_query_prompt_for_queries_passage_prompt_for_documents(base_model: Path, hidden_states, tmp_path: Path):
    embedder = Embedder(st_folder(base_model, tmp_path / "e5_like", pooling="cls", prompts=PROMPTS))
    assert (embedder.query_prompt, embedder.document_prompt) == ("query: ", "passage: ")
    query, document = embedder.embed_queries(["a red dog"])[0], embedder.embed_documents(["a red dog"])[0]
    np.testing.assert_allclose(query, hidden_states("query: a red dog")[0][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(document, hidden_states("passage: a red dog")[0][0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(query, hidden_states("a red dog")[0][0], atol=1e-3)
    assert not np.allclose(document, query, atol=1e-3)
    np.testing.assert_allclose(embedder.embed(["a red dog"])[0], hidden_states("a red dog")[0][0],
                               rtol=1e-4, atol=1e-5)  # no default_prompt_name: plain embed adds nothing


def test_default_prompt_applies_when_there_is_no_query_or_document_prompt(base_model: Path, hidden_states,
                                                                          tmp_path: Path):
    folder = st_folder(base_model, tmp_path / "default", pooling="cls", prompts={"classification": "classify: "},
                       default_prompt_name="classification")
    embedder = Embedder(folder)
    expected = hidden_states("classify: a red dog")[0][0]
    for vector in (embedder.embed_queries(["a red dog"])[0], embedder.embed_documents(["a red dog"])[0]):
        np.testing.assert_allclose(vector, expected, rtol=1e-4, atol=1e-5)


def test_dense_index_embeds_passages_and_queries_with_their_prompts(base_model: Path, hidden_states,
                                                                    tmp_path: Path):
    folder = st_folder(base_model, tmp_path / "e5_like", pooling="cls", prompts=PROMPTS)
    dense = DenseRetriever(tmp_path / "index", embedder=Embedder(folder))
    dense.add([Passage("p1", "", "the cat sat on the mat")])
    score = dense.search("a red dog", k=1)[0].score
    q, d = hidden_states("query: a red dog")[0][0], hidden_states("passage: the cat sat on the mat")[0][0]
    assert score == pytest.approx(float(q @ d), rel=1e-4)
    for wrong in (hidden_states("a red dog")[0][0] @ d, q @ hidden_states("the cat sat on the mat")[0][0],
                  hidden_states("passage: a red dog")[0][0] @ d):
        assert abs(score - float(wrong)) > 1e-3 * abs(score)
    dense.close()
    reopened = DenseRetriever(tmp_path / "index", create_if_missing=False)  # the recorded folder, not MiniLM
    assert reopened.embedder.path == folder.resolve()
    assert reopened.search("a red dog", k=1)[0].score == pytest.approx(score, rel=1e-6)
    reopened.close()
    other = Embedder(st_folder(base_model, tmp_path / "other" / "e5_like", pooling="mean", prompts=PROMPTS))
    with pytest.raises(RetrievalError, match="was built with embedder"):  # same name, other pooling
        DenseRetriever(tmp_path / "index", embedder=other, create_if_missing=False)


def test_include_prompt_false_pools_over_the_text_only(base_model: Path, hidden_states, tmp_path: Path):
    folder = st_folder(base_model, tmp_path / "instructor_like", pooling="mean", prompts=PROMPTS)
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**config, "include_prompt": False}))
    hidden, ids = hidden_states("query: a red dog")
    assert ids[1:3] == [WORDS.index("query"), WORDS.index(":")]
    np.testing.assert_allclose(Embedder(folder).embed_queries(["a red dog"])[0], hidden[3:].mean(0),
                               rtol=1e-4, atol=1e-5)  # [CLS] query : left out, as sentence-transformers


def test_max_seq_length_truncates_unless_overridden(base_model: Path, hidden_states, tmp_path: Path):
    folder = st_folder(base_model, tmp_path / "short", pooling="mean", max_seq_length=4)
    embedder = Embedder(folder)
    assert embedder.max_tokens == 4
    hidden, ids = hidden_states(TEXTS[0], max_length=4)
    assert len(ids) == 4
    np.testing.assert_allclose(embedder.embed([TEXTS[0]])[0], hidden.mean(0), rtol=1e-4, atol=1e-5)
    assert Embedder(folder, max_tokens=16).max_tokens == 16
    assert Embedder(folder, max_tokens=1000).max_tokens == 64  # never past the position embeddings


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "pooling_mode_cls_token"),
        ({"pooling_mode_weightedmean_tokens": True}, "pooling_mode_weightedmean_tokens"),
        ({}, "none"),
    ],
)
def test_unsupported_pooling_names_the_file(base_model: Path, tmp_path: Path, pooling: dict, expected: str):
    folder = st_folder(base_model, tmp_path / "bad", pooling=pooling)
    with pytest.raises(RetrievalError) as caught:
        Embedder(folder)
    message = str(caught.value)
    assert str(folder / "1_Pooling" / "config.json") in message and expected in message
    assert "unsupported pooling" in message


def test_unsupported_module_names_modules_json(base_model: Path, tmp_path: Path):
    dense = {"name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    folder = st_folder(base_model, tmp_path / "with_dense", pooling="mean", extra_modules=(dense,))
    with pytest.raises(RetrievalError, match=r"modules\.json: module 'sentence_transformers\.models\.Dense'"):
        Embedder(folder)


def test_cli_embedder_flag_builds_and_searches_with_the_folder(base_model: Path, tmp_path: Path, capsys):
    from cli.main import build_parser, main

    folder = st_folder(base_model, tmp_path / "e5_like", pooling="cls", prompts=PROMPTS)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "title": "", "text": "the cat sat on the mat"}\n'
                      '{"_id": "d2", "title": "", "text": "fruit is sweet"}\n')
    index = tmp_path / "index"
    assert main(["index", "--corpus", str(corpus), "--index", str(index), "--backend", "dense",
                 "--embedder", str(folder), "--no-progress", "--json"]) == 0
    info = json.loads((index / "regrad_index.json").read_text())
    assert info["embedder_path"] == str(folder.resolve())
    assert info["embedder_settings"]["query_prompt"] == "query: " and info["embedder_settings"]["pooling"] == "cls"
    capsys.readouterr()
    assert main(["search", "--index", str(index), "--query", "a red dog", "--k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 2  # the recorded folder, not MiniLM (dim 384)
    assert main(["search", "--index", str(index), "--query", "a red dog", "--embedder", str(folder),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["index", "--corpus", str(corpus), "--index", str(tmp_path / "bm25"), "--embedder",
                 str(folder)]) == 2  # tantivy has no embedder: a usage error
    parsers = build_parser()._subparsers._group_actions[0].choices
    for verb in ("index", "search"):
        flag = next(a for a in parsers[verb]._actions if "--embedder" in a.option_strings)
        assert "sentence-transformers" in flag.help
        assert all(a.help for a in parsers[verb]._actions)
