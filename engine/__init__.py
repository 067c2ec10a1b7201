"""The question-answering engine: retrieve → gradients → generate, on plain dataclasses.

The library core that the HTTP service (`service/`) and in-process evaluation
(`offline_tools.evaluation.evaluate`) both drive; it knows nothing of HTTP. Its settings
(`engine/settings.py`) read the `REGRAD_*` environment with pydantic-settings.

    from engine import Engine, EngineConfig, Question
    engine = Engine.from_config(EngineConfig(index="artifacts/index", store="artifacts/store"))
    [answer] = engine.answer_batch([Question("Who wrote Hamlet?", mode="regrad")])
    print(answer.answer, [p.id for p in answer.passages])
    engine.close()

`MODES` is the one table of answering modes. `Engine` is imported lazily: it pulls in torch.
"""

from __future__ import annotations

from importlib import metadata

from engine.config import DEFAULT_ES_INDEX, DEFAULT_TANTIVY_INDEX, EngineConfig
from engine.errors import DocumentConflictError, EngineError
from engine.modes import MODE_NAMES, MODES, ModeSpec, mode_spec
from engine.types import Answer, Document, DocumentsResult, PassageHit, Question, StageTimings

__all__ = [
    "__version__",
    "Engine",
    "EngineConfig",
    "Question",
    "Answer",
    "PassageHit",
    "StageTimings",
    "Document",
    "DocumentsResult",
    "ModeSpec",
    "MODES",
    "MODE_NAMES",
    "mode_spec",
    "EngineError",
    "DocumentConflictError",
    "DEFAULT_TANTIVY_INDEX",
    "DEFAULT_ES_INDEX",
]

try:
    __version__ = metadata.version("regrad")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str):
    if name == "Engine":
        from engine.core import Engine

        return Engine
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
