"""Everything that touches the LLM: base model, presets, learner, gradients, adaptation, generation.

Names are imported lazily, so `import models.errors` (the CLI does it for every command) does
not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = [
    "AnswerRequest", "Learner", "LearnerConfig", "LearnerMismatchError", "ModelError", "ModelNotFoundError",
    "ParamLayout", "build_prompt", "format_passage", "generate_answers", "list_presets", "load_base_model",
    "load_preset", "passage_gradients", "prepare_model", "summed_gradient",
]

_WHERE = {
    "AnswerRequest": "generate", "build_prompt": "generate", "generate_answers": "generate",
    "Learner": "learner", "ParamLayout": "layout",
    "LearnerConfig": "config", "list_presets": "config", "load_preset": "config",
    "LearnerMismatchError": "errors", "ModelError": "errors", "ModelNotFoundError": "errors",
    "format_passage": "gradients", "passage_gradients": "gradients", "summed_gradient": "gradients",
    "load_base_model": "base", "prepare_model": "base",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


if TYPE_CHECKING:  # for type checkers and IDEs
    from models.base import load_base_model, prepare_model
    from models.config import LearnerConfig, list_presets, load_preset
    from models.errors import LearnerMismatchError, ModelError, ModelNotFoundError
    from models.generate import AnswerRequest, build_prompt, generate_answers
    from models.gradients import format_passage, passage_gradients, summed_gradient
    from models.layout import ParamLayout
    from models.learner import Learner
