"""The store against the models/ contract: real layouts, fingerprints and gradients go in, sums come out."""

from __future__ import annotations

import pytest
import torch

from gradient_store import FingerprintMismatchError, GradientStore


def test_stored_sum_equals_the_recomputed_sum(tmp_path, tiny_learner, passages):
    from models import passage_gradients, summed_gradient

    texts = passages[:4]
    store = GradientStore.create(
        tmp_path / "s", layout=tiny_learner.layout, fingerprint=tiny_learner.fingerprint, codec="fp32"
    )
    with store:
        store.append([f"p{i}" for i in range(4)], passage_gradients(tiny_learner, texts))
        vector, found, missing = store.sum(["p0", "p2", "p3", "absent"])
        assert found == ["p0", "p2", "p3"] and missing == ["absent"]
        expected = summed_gradient(tiny_learner, [texts[0], texts[2], texts[3]])
        assert torch.allclose(vector, expected, rtol=1e-4, atol=1e-7)
        assert store.layout == tiny_learner.layout.to_json() and store.dim == tiny_learner.layout.dim


@pytest.mark.integration
def test_bundled_learner_layout_and_fingerprint(tmp_path, real_learner):
    layout, fingerprint = real_learner.layout.to_json(), real_learner.fingerprint
    with GradientStore.create(tmp_path / "s", layout=layout, fingerprint=fingerprint) as store:
        assert store.dim == 760_320 and store.codec.row_bytes(store.dim) == 1_520_640
        store.append(["a", "b"], torch.randn(2, store.dim) * 1e-3)
    with GradientStore.open(tmp_path / "s", expect_fingerprint=fingerprint) as store:
        assert store.sum(["a", "b"]).found_ids == ["a", "b"]
    with pytest.raises(FingerprintMismatchError):
        GradientStore.open(tmp_path / "s", expect_fingerprint="0" * 64)


def test_regrad_encode_codec_lowrank4_needs_no_other_flag(tmp_path, tiny_learner, passages, monkeypatch, capsys):
    """`regrad encode --codec lowrank4` on real gradients (the tiny learner, r = 4: rank 4 keeps every
    tensor whole, so only the int8 factors differ from the exact sum)."""
    import json

    from cli.main import main
    from models import format_passage, summed_gradient

    record = {"id": "q1", "dataset": "hotpotqa", "question": "Who?", "answers": ["Ann"], "answer_type": "short",
              "choices": None, "passages": [{"id": f"p{i}", "title": "", "text": text, "score": 1.0}
                                            for i, text in enumerate(passages[:3])]}
    (tmp_path / "aug.jsonl").write_text(json.dumps(record) + "\n")
    monkeypatch.setattr("offline_tools.encoding.encode.Learner.load", lambda path, device=None: tiny_learner)
    store_dir = tmp_path / "store"
    assert main(["encode", "--checkpoint", str(tmp_path / "ckpt"), "--store", str(store_dir),
                 "--passages-from", str(tmp_path / "aug.jsonl"), "--codec", "lowrank4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["encoded"] == 3
    with GradientStore.open(store_dir, expect_fingerprint=tiny_learner.fingerprint) as store:
        assert store.codec.name == "lowrank4" and store.verify().ok
        vector, found, _ = store.sum(["p0", "p2"])
        expected = summed_gradient(tiny_learner, [format_passage("", passages[0]), format_passage("", passages[2])])
        assert found == ["p0", "p2"]
        assert float((vector - expected).norm() / expected.norm()) < 0.02
