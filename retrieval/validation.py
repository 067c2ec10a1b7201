"""Input checks shared by the backends: any user string is accepted, passages are well-formed."""

from __future__ import annotations

from retrieval.errors import RetrievalError
from retrieval.passage import Passage

__all__ = ["check_k", "check_passage", "clean_text", "MAX_K"]

MAX_K = 10_000


def clean_text(text: str) -> str:
    """Make any Python string encodable: lone surrogates (from JSON `\\ud800`) become U+FFFD."""
    if not isinstance(text, str):
        text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # A surrogate pair becomes its character; a lone surrogate becomes U+FFFD.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise RetrievalError(f"k (the number of hits) must be an integer in [1, {MAX_K}]; got {k!r}")


def check_passage(passage: Passage, position: int) -> None:
    """Refuse a passage the index could not find again: no id, or non-string fields."""
    if not isinstance(passage, Passage):
        raise RetrievalError(f"passage #{position} is a {type(passage).__name__}, expected retrieval.Passage")
    if not isinstance(passage.id, str) or not passage.id.strip():
        raise RetrievalError(
            f"passage #{position} has id {passage.id!r}; every passage needs a non-empty string id"
        )
    if not isinstance(passage.title, str) or not isinstance(passage.text, str):
        raise RetrievalError(f"passage {passage.id!r}: title and text must be strings")
