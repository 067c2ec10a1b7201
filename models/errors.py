"""Errors raised by `models/`: each names the thing, the value and what to do."""

from __future__ import annotations

__all__ = ["ModelError", "ModelNotFoundError", "LearnerMismatchError"]


class ModelError(Exception):
    """Base class for model, preset and learner errors."""

    # What `regrad` exits with for this family (cli/main.py reads it; the codes are ExitStatus in
    # offline_tools/errors.py, which this layer cannot import).
    exit_status = 1  # ERROR


class ModelNotFoundError(ModelError):
    """A base model name or folder could not be resolved."""


class LearnerMismatchError(ModelError):
    """A learner file does not match the expected fingerprint, preset or parameter layout."""

    exit_status = 4  # ExitStatus.MISMATCH
