"""The regrad HTTP service: the FastAPI app, its settings and request micro-batching.

`create_app(settings)` builds the app (see docs/service.md) around an `engine.Engine` (the
retrieve → gradients → generate pipeline, which knows nothing of HTTP); the routes map the pydantic
schemas onto the engine's dataclasses.
"""

from service.app import create_app, lifespan
from service.batching import Batched, BatcherStoppedError, MicroBatcher, QueueFullError
from service.settings import Settings

__all__ = [
    "create_app",
    "lifespan",
    "Settings",
    "MicroBatcher",
    "Batched",
    "QueueFullError",
    "BatcherStoppedError",
]

