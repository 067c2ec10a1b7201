"""`regrad encode --ray auto --workers 2` on a real local Ray cluster: the same store as a single-process encode,
and a SIGKILLed run resumes where it stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from cli.main import main
from gradient_store import GradientStore
from tests.conftest import REPO_ROOT, make_tiny_base

N_PASSAGES = 120


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random learner saved as a checkpoint whose base model is a local folder (as a worker loads it)."""
    from models import Learner, LearnerConfig

    root = tmp_path_factory.mktemp("tiny")
    model, tokenizer = make_tiny_base()
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    config = LearnerConfig(base_model=str(root / "base"), layers=[2, 3], r=4, lora_alpha=8,
                           max_passage_tokens=64, name="tiny")
    learner = Learner.create(config)
    with torch.no_grad():
        for name, tensor in learner.lora_tensors().items():
            if name.endswith("lora_B"):
                tensor.normal_(0, 0.2)  # a trained-looking learner: every gradient block is non-zero
    learner.save(root / "ckpt")
    return root / "ckpt"


@pytest.fixture
def corpus(tmp_path) -> Path:
    words = ["river", "castle", "engine", "poet", "harbour", "comet", "violin", "desert", "lantern", "orchard",
             "glacier", "falcon"]
    lines = [json.dumps({"id": f"p{i}", "title": f"Topic {i}",
                         "text": " ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 23))})
             for i in range(N_PASSAGES)]
    lines.append(json.dumps({"id": "p3", "title": "again", "text": "a repeated id: the first one counts"}))
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def ray_env(monkeypatch):
    """A private Ray temp dir (short: Ray's socket paths must stay under 108 bytes), so `--ray auto` never
    joins a cluster someone else runs on this machine, and starts its own."""
    pytest.importorskip("ray.data")
    tmp = tempfile.mkdtemp(prefix="rr", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the workers import regrad from this checkout
    yield {**os.environ}
    subprocess.run(["rm", "-rf", tmp], check=False)


def _rows_in_parts(parts: Path) -> int:
    total = 0
    for part in parts.glob("*/manifest.json"):
        with GradientStore.open(part.parent, cache_bytes=0) as store:
            total += len(store)
    return total


KILL_SESSION = """
def kill_session(sid):
    # SIGKILL every process of session `sid` (the driver and the local Ray cluster it started), itself last.
    import os, signal
    from pathlib import Path
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != me:
            try:
                if os.getsid(int(proc.name)) == sid:
                    os.kill(int(proc.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if os.getsid(me) == sid:
        os.kill(me, signal.SIGKILL)
"""
_namespace: dict = {}
exec(KILL_SESSION, _namespace)
kill_session = _namespace["kill_session"]

# The child runs `regrad encode --ray` and kills its own session as soon as the first encoded rows, committed to
# their part, come back to the driver: mid-run, whatever the machine's speed.
CHILD = KILL_SESSION + """
import os, sys
import offline_tools.encoding.encode_ray as encode_ray
from cli.main import main
encode_ray._ROWS_HOOK = lambda done: kill_session(os.getsid(0))
sys.exit(main(sys.argv[1:]))
"""


def test_ray_encode_matches_single_process_and_resumes_after_sigkill(tiny_checkpoint, corpus, tmp_path, ray_env,
                                                                     capsys):
    single, distributed = tmp_path / "single", tmp_path / "ray"
    assert main(["encode", "--checkpoint", str(tiny_checkpoint), "--store", str(single), "--corpus", str(corpus),
                 "--device", "cpu"]) == 0
    capsys.readouterr()

    # A Ray encode in its own session, SIGKILLed (driver and cluster) once some batches are committed.
    command = [sys.executable, "-c", CHILD, "encode", "--checkpoint", str(tiny_checkpoint), "--store",
               str(distributed), "--corpus", str(corpus), "--device", "cpu", "--ray", "auto", "--workers", "2"]
    child = subprocess.Popen(command, cwd=REPO_ROOT, env=ray_env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = child.communicate(timeout=600)
    finally:
        kill_session(child.pid)  # what is left of the session if the child never got that far
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    parts = tmp_path / "ray.parts"
    committed = _rows_in_parts(parts)
    assert 1 <= committed < N_PASSAGES, f"the kill should land mid-run, {committed} rows were committed"
    with GradientStore.open(distributed) as killed:
        assert len(killed) == 0, "nothing is merged before every batch is done"

    # The rerun skips what the parts hold, encodes the rest, merges, verifies and removes the parts.
    assert main(["encode", "--checkpoint", str(tiny_checkpoint), "--store", str(distributed), "--corpus", str(corpus),
                 "--device", "cpu", "--ray", "auto", "--workers", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["already_stored"] == committed and result["encoded"] == N_PASSAGES - committed
    assert result["store_rows"] == N_PASSAGES
    assert not parts.exists()

    with GradientStore.open(single) as a, GradientStore.open(distributed, expect_fingerprint=a.fingerprint) as b:
        assert b.verify().ok and not b.verify().warnings
        assert sorted(a.ids()) == sorted(b.ids()) == sorted(f"p{i}" for i in range(N_PASSAGES))
        assert b.codec.name == a.codec.name and b.layout == a.layout
        ids = a.ids()
        got, want = b.get(ids), a.get(ids)
        for pid in ids:
            rel = (got[pid] - want[pid]).norm() / want[pid].norm()
            assert rel <= 1e-2, (pid, float(rel))
        assert b.get(["p3"])["p3"].ne(0).any()

    # Nothing left to do: a third run encodes nothing and leaves the store as it is.
    assert main(["encode", "--checkpoint", str(tiny_checkpoint), "--store", str(distributed), "--corpus", str(corpus),
                 "--ray", "auto", "--workers", "2"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["encoded"] == 0 and again["already_stored"] == N_PASSAGES and again["store_rows"] == N_PASSAGES


def test_ray_flags_without_ray_are_a_usage_error(tmp_path, capsys):
    code = main(["encode", "--checkpoint", str(tmp_path / "ckpt"), "--store", str(tmp_path / "s"),
                 "--corpus", str(tmp_path / "c.jsonl"), "--workers", "2"])
    assert code == 2 and "--workers and --parts-dir go with --ray" in capsys.readouterr().err


def test_ray_encode_without_the_extra_names_the_install(monkeypatch, tmp_path):
    from offline_tools.encoding.encode import EncodeArgs
    from offline_tools.encoding.encode_ray import encode_on_ray
    from offline_tools.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ModuleNotFoundError
    args = EncodeArgs(checkpoint=str(tmp_path / "ckpt"), store=str(tmp_path / "s"), passages_from=[],
                      corpus=[str(tmp_path / "c.jsonl")])
    with pytest.raises(MissingExtraError, match=r"pip install 'regrad\[ray\]'"):
        encode_on_ray(args, workers=2)
    assert not (tmp_path / "s").exists()


def test_a_pool_the_cluster_cannot_hold_is_refused_up_front():
    from offline_tools.encoding.encode_ray import _check_resources
    from offline_tools.errors import UsageError

    assert _check_resources({"CPU": 3.0}, "auto", 2) is False
    assert _check_resources({"CPU": 16.0, "GPU": 8.0}, "auto", 8) is True
    assert _check_resources({"CPU": 16.0, "GPU": 8.0}, "cpu", 4) is False
    with pytest.raises(UsageError, match="--workers 9 asks for one GPU per actor, but the Ray cluster has 8"):
        _check_resources({"CPU": 64.0, "GPU": 8.0}, "auto", 9)
    with pytest.raises(UsageError, match="--device cuda, but the Ray cluster has no GPU"):
        _check_resources({"CPU": 3.0}, "cuda", 2)


def test_half_created_and_half_deleted_parts_are_never_read(tmp_path):
    """A part killed before its manifest, or renamed away for deletion, is not a part; the clean-up removes both."""
    from offline_tools.encoding.encode_ray import _committed_parts, _remove_parts

    root = tmp_path / "store.parts"
    complete = GradientStore.create(root / "host-1-aaaa", fingerprint="ab" * 32, rows_per_shard=2,
                                    layout=[{"name": "t", "shape": [4], "offset": 0}])
    complete.close()
    (root / "host-2-bbbb" / "shards").mkdir(parents=True)  # killed inside `create`: no manifest yet
    (root / ".trash-host-3-cccc" / "shards").mkdir(parents=True)  # killed while being deleted
    assert _committed_parts(root) == [root / "host-1-aaaa"]
    _remove_parts(root)
    assert not root.exists()


@pytest.mark.parametrize("how", ["address", "stale auto"])
def test_no_cluster_at_the_address_is_a_clear_error_not_a_hang(tiny_checkpoint, corpus, tmp_path, ray_env,
                                                                monkeypatch, capsys, how):
    """`ray.init` waits forever for a head that is gone: the command checks the address first (exit 6)."""
    address = "127.0.0.1:9"  # the discard port: nothing listens there
    if how == "stale auto":
        monkeypatch.setenv("RAY_ADDRESS", address)
    code = main(["encode", "--checkpoint", str(tiny_checkpoint), "--store", str(tmp_path / "s"),
                 "--corpus", str(corpus), "--ray", "auto" if how == "stale auto" else address, "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 6 and re.search(r"no Ray cluster answers at \S+:9\b", err), err  # auto resolves 127.0.0.1
    assert not (tmp_path / "s.parts").exists()
