"""End to end with the real small model: index -> augment -> train (2 steps) -> encode -> store verify."""

import json

import pytest

from cli.main import main


@pytest.mark.integration
def test_augment_train_encode_verify_on_real_data(shared_data, tmp_path, capsys):
    lines = (shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl").read_text().splitlines()[:12]
    corpus = tmp_path / "hotpot_small.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    index, ckpt, store = tmp_path / "index", tmp_path / "ckpt", tmp_path / "store"
    aug = tmp_path / "data_aug" / "hotpotqa"

    assert main(["index", "--corpus", str(corpus), "--index", str(index), "--no-progress"]) == 0
    for split, end in (("train", 3), ("dev", 2)):
        assert main(["augment", "--dataset", "hotpotqa", "--data-path", str(corpus), "--index", str(index),
                     "--split", split, "--end", str(end), "--output", str(aug / f"{split}.jsonl"),
                     "--no-progress"]) == 0
    train_ids = {json.loads(x)["id"] for x in (aug / "train.jsonl").read_text().splitlines()}
    dev_ids = {json.loads(x)["id"] for x in (aug / "dev.jsonl").read_text().splitlines()}
    assert len(train_ids) == 3 and len(dev_ids) == 2 and not train_ids & dev_ids

    capsys.readouterr()
    assert main(["train", "--train", str(aug / "train.jsonl"), "--dev", str(aug / "dev.jsonl"),
                 "--output", str(ckpt), "--max-steps", "2", "--meta-batch-size", "1", "--eval-every", "2",
                 "--max-eval-examples", "1", "--top-k", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2
    assert (ckpt / "best" / "learner.safetensors").is_file() and (ckpt / "last" / "optimizer.safetensors").is_file()
    log = [json.loads(x) for x in (ckpt / "training_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["event"] == "train"] == [1, 2]

    assert main(["encode", "--checkpoint", str(ckpt / "best"), "--store", str(store),
                 "--passages-from", str(aug / "dev.jsonl"), "--top-k", "2"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["encoded"] >= 2 and first["store_rows"] == first["encoded"]
    # resumable: a second run finds everything stored and computes nothing
    assert main(["encode", "--checkpoint", str(ckpt / "best"), "--store", str(store),
                 "--passages-from", str(aug / "dev.jsonl"), "--top-k", "2"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["encoded"] == 0 and second["already_stored"] == first["encoded"]
    assert main(["store", "verify", str(store), "--no-progress"]) == 0


def test_train_refuses_overlapping_validation(tmp_path, capsys):
    record = {"id": "q1", "dataset": "hotpotqa", "question": "Who?", "answers": ["Ann"], "answer_type": "short",
              "choices": None, "passages": [{"id": "p", "title": "T", "text": "Ann did it.", "score": 1.0}]}
    data = tmp_path / "a.jsonl"
    data.write_text(json.dumps(record) + "\n")
    assert main(["train", "--train", str(data), "--dev", str(data), "--output", str(tmp_path / "o")]) != 0
    assert "validation must be a separate split" in capsys.readouterr().err


def test_encode_with_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    code = main(["encode", "--checkpoint", str(tmp_path / "nope"), "--store", str(tmp_path / "s"),
                 "--passages-from", str(tmp_path / "x.jsonl")])
    assert code != 0
    err = capsys.readouterr().err
    assert "regrad: error:" in err and "nope" in err and "Traceback" not in err
