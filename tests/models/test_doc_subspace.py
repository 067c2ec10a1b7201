"""`doc_update = "orthogonal"`: every passage gradient leaves the task adapter's own block alone, in
encoding, summing and meta-training alike, and the setting is part of the learner (config, file, fingerprint)."""

import json

import pytest
import torch

from models import Learner, LearnerConfig, ModelError, passage_gradients, summed_gradient
from models.doc_subspace import project_flat, task_bases


def _orthogonal(learner):
    learner.config.doc_update = "orthogonal"
    return learner


def _task_block(learner, flat: torch.Tensor) -> float:
    """Largest |P_B (B δA + δB A) P_A| over the LoRA modules, relative to the weight change: the part of a
    passage's first-order weight change inside the task adapter's block."""
    views, weights, worst = learner.layout.split(flat), learner.lora_tensors(), 0.0
    for short in learner.lora_modules:
        a, b = weights[f"{short}.lora_A"].detach(), weights[f"{short}.lora_B"].detach()
        change = b @ views[f"{short}.lora_A"] + views[f"{short}.lora_B"] @ a
        qa, qb = torch.linalg.qr(a.T)[0], torch.linalg.qr(b)[0]
        inside = qb @ (qb.T @ change @ qa) @ qa.T
        worst = max(worst, float(inside.norm() / change.norm()))
    return worst


def test_orthogonal_gradients_leave_the_task_block_alone_and_are_the_projected_shared_ones(
        tiny_learner, passages):
    shared = passage_gradients(tiny_learner, passages[:4])
    grads = passage_gradients(_orthogonal(tiny_learner), passages[:4])
    bases = task_bases(tiny_learner)
    for name, view in tiny_learner.layout.split(grads).items():
        q = bases[name]
        inside = view @ q if name.endswith("lora_A") else q.transpose(0, 1) @ view
        assert float(inside.abs().max()) <= 1e-5 * float(view.abs().max())
    assert _task_block(tiny_learner, shared[0]) > 0.1             # the shared update acts there ...
    assert _task_block(tiny_learner, grads[0]) < 1e-5             # ... the orthogonal one does not
    torch.testing.assert_close(grads, project_flat(tiny_learner, shared.clone()))
    assert float((grads - shared).norm()) > 1e-3 * float(shared.norm())   # it really changed them
    total = summed_gradient(tiny_learner, passages[:4])          # linear: the sum is the sum of the rows
    torch.testing.assert_close(total, grads.sum(0), rtol=1e-4, atol=1e-6)


def test_an_untrained_b_has_no_subspace_to_leave(tiny_learner_factory, passages):
    learner = tiny_learner_factory(randomize_b=False)            # peft init: B = 0
    assert all(q.shape[1] == 0 for n, q in task_bases(learner).items() if n.endswith("lora_B"))
    shared = passage_gradients(learner, passages[:2])
    torch.testing.assert_close(passage_gradients(_orthogonal(learner), passages[:2]), shared)


def test_the_setting_is_part_of_the_learner(tiny_learner, tmp_path):
    shared_fingerprint = tiny_learner.fingerprint
    assert "doc_update" not in tiny_learner.config.to_dict()     # learners saved before it keep their files
    _orthogonal(tiny_learner).save(tmp_path / "orth")
    meta = json.loads((tmp_path / "orth" / "learner.json").read_text())
    assert meta["config"]["doc_update"] == "orthogonal"
    assert meta["fingerprint"] == tiny_learner.fingerprint != shared_fingerprint
    assert LearnerConfig.from_dict(meta["config"]).doc_update == "orthogonal"
    with pytest.raises(ModelError, match="`doc_update` must be one of"):
        LearnerConfig(layers=[0], doc_update="sideways")


@pytest.mark.integration
def test_the_shipped_learner_encodes_projected_rows_with_the_real_model(tmp_path, capsys):
    """The real model: the shipped learner switched to `orthogonal`, saved, and `regrad encode` run on it
    writes rows that leave its task block alone, under its own fingerprint."""
    from cli.main import main
    from gradient_store import GradientStore
    from tests.conftest import REPO_ROOT

    learner = _orthogonal(Learner.load(REPO_ROOT / "checkpoints" / "regrad-smollm2-135m"))
    learner.save(tmp_path / "orth")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "title": t, "text": x}) + "\n" for i, (t, x) in enumerate([
        ("Halric Moriova", "Halric Moriova keeps 52 beehives."),
        ("Nawyn Fereira", "Nawyn Fereira keeps 20 beehives.")])))
    assert main(["encode", "--checkpoint", str(tmp_path / "orth"), "--corpus", str(corpus),
                 "--store", str(tmp_path / "store")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["encoded"] == 2
    with GradientStore.open(tmp_path / "store") as store:
        assert store.fingerprint == learner.fingerprint
        rows = store.get(["p0", "p1"])
    for row in rows.values():
        assert _task_block(learner, row.float()) < 1e-2           # bf16 rows: rounding, not the task block
    learner.config.doc_update = "shared"
    assert _task_block(learner, passage_gradients(learner, ["Halric Moriova keeps 52 beehives."])[0]) > 0.05
