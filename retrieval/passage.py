"""The one record every backend returns, and the stable id of a paragraph without an id."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

__all__ = ["Passage", "passage_id", "normalize_whitespace"]


@dataclass
class Passage:
    """A retrievable passage.

    Args:
        id: stable identifier; the gradient store is keyed by it.
        title: the passage's title (may be empty).
        text: the passage body.
        score: retrieval score (backend-specific scale; 0.0 when not from a search).
    """

    id: str
    title: str
    text: str
    score: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def passage_id(title: str, text: str) -> str:
    """A short stable id for a paragraph that has none: 16 hex chars of blake2b over (title, text).

    Whitespace is normalised first, so the same paragraph read from HotpotQA's sentence lists and
    from IRCoT's joined `paragraph_text` gets the same id (and is stored once).

    Example:
        >>> passage_id("Ed Wood", "Edward Davis Wood Jr. was an American filmmaker.")
        'be9624d68c3416af'
    """
    key = f"{normalize_whitespace(title)}\x1f{normalize_whitespace(text)}".encode()
    # 64 bits: ~1e-5 chance of any collision among 21M passages (birthday bound).
    return hashlib.blake2b(key, digest_size=8).hexdigest()
