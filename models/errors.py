"""Errors raised by `models/`: each names the thing, the value and what to do."""

from __future__ import annotations

__all__ = ["ModelError", "ModelNotFoundError", "LearnerMismatchError"]


class ModelError(Exception):
    """Base class for model, preset and learner errors."""


class ModelNotFoundError(ModelError):
    """A base model name or folder could not be resolved."""


class LearnerMismatchError(ModelError):
    """A learner file does not match the expected fingerprint, preset or parameter layout."""
