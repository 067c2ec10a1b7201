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
