"""The regrad HTTP service: FastAPI app, QA engine and request micro-batching.

`create_app(settings)` builds the app (see docs/service.md); `Engine` is the retrieve → gradients →
generate pipeline, also used in-process by `regrad evaluate --in-process` and the serving benchmark.
The engine is imported lazily: it pulls in torch and transformers.
"""

from service.app import create_app, lifespan
from service.batching import Batched, BatcherStoppedError, MicroBatcher, QueueFullError
from service.settings import Settings

__all__ = [
    "create_app",
    "lifespan",
    "Settings",
    "Engine",
    "MicroBatcher",
    "Batched",
    "QueueFullError",
    "BatcherStoppedError",
]


def __getattr__(name: str):
    if name == "Engine":
        from service.engine import Engine

        return Engine
    raise AttributeError(f"module 'service' has no attribute {name!r}")
