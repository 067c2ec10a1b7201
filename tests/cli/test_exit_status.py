"""Every error family's exit status comes from the exception class (`exit_status`), and `regrad` prints
it as one line: a user's mistake is never a traceback. Each case raises a real error of its family from
inside a real command."""

from __future__ import annotations

import pytest

import cli.commands.search as search_command
from cli.main import main
from engine.errors import DocumentConflictError
from gradient_store.errors import (
    CorruptShardError,
    DuplicateIdError,
    FingerprintMismatchError,
    StoreMismatchError,
)
from models.errors import LearnerMismatchError, ModelNotFoundError
from offline_tools.errors import ExitStatus, InputFileError, MissingExtraError, RegradError, UsageError
from retrieval.errors import BackendUnavailableError, CorpusFormatError, IndexMismatchError, IndexNotFoundError

CASES = [
    (RegradError("plain"), ExitStatus.ERROR),
    (UsageError("bad flag"), ExitStatus.USAGE),
    (InputFileError("data.jsonl", "not JSON", line=3), ExitStatus.INPUT),
    (MissingExtraError("encode --ray", "ray", "ray"), ExitStatus.ERROR),
    (RegradError("custom", exit_status=ExitStatus.UNAVAILABLE), ExitStatus.UNAVAILABLE),
    (DuplicateIdError("store", ["a"]), ExitStatus.ERROR),
    (FingerprintMismatchError("store", "a" * 64, "b" * 64), ExitStatus.MISMATCH),
    (StoreMismatchError("store", "codec", "bf16", "int8", "merge stores of one codec"), ExitStatus.MISMATCH),
    (CorruptShardError("store", "shard-00001.safetensors", "sha256 differs"), ExitStatus.CORRUPT),
    (ModelNotFoundError("no such model"), ExitStatus.ERROR),
    (LearnerMismatchError("another preset"), ExitStatus.MISMATCH),
    (CorpusFormatError("corpus.jsonl", 2, "not JSON"), ExitStatus.INPUT),
    (IndexNotFoundError("absent", "index absent does not exist"), ExitStatus.INPUT),
    (IndexMismatchError("another backend"), ExitStatus.MISMATCH),
    (BackendUnavailableError("http://127.0.0.1:9", "connection refused"), ExitStatus.UNAVAILABLE),
    (DocumentConflictError(["doc-1"]), ExitStatus.ERROR),
]


@pytest.mark.parametrize(("error", "status"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_each_family_exits_with_its_class_status_in_one_line(error: Exception, status: int, monkeypatch,
                                                            capsys, tmp_path) -> None:
    def fail(args):
        raise error

    monkeypatch.setattr(search_command, "run", fail)  # `register` binds `run` when the parser is built
    assert main(["search", "--index", str(tmp_path), "--query", "x"]) == status
    err = capsys.readouterr().err
    assert err.startswith("regrad: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(error) in err


def test_an_unknown_exception_is_not_swallowed(monkeypatch, tmp_path) -> None:
    def fail(args):
        raise RuntimeError("a bug, not a user's mistake")

    monkeypatch.setattr(search_command, "run", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["search", "--index", str(tmp_path), "--query", "x"])
