"""Everything that touches the LLM: base model, presets, learner, gradients, adaptation, generation."""

from models.base import load_base_model, prepare_model
from models.config import LearnerConfig, list_presets, load_preset
from models.errors import LearnerMismatchError, ModelError, ModelNotFoundError
from models.generate import AnswerRequest, build_prompt, generate_answers
from models.gradients import format_passage, passage_gradients, summed_gradient
from models.layout import ParamLayout
from models.learner import Learner

__all__ = [
    "AnswerRequest", "Learner", "LearnerConfig", "LearnerMismatchError", "ModelError", "ModelNotFoundError",
    "ParamLayout", "build_prompt", "format_passage", "generate_answers", "list_presets", "load_base_model",
    "load_preset", "passage_gradients", "prepare_model", "summed_gradient",
]
