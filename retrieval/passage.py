"""The one record every backend returns, the stable id of a paragraph without an id, and the one
order of search hits (by score, equal scores by id) every BM25 backend returns."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

__all__ = ["MAX_TIED_HITS", "Passage", "by_score_then_id", "normalize_whitespace", "passage_id", "ties_past"]

MAX_TIED_HITS = 1024  # hits a search reads past the k-th while scores still tie with it (id order decides)


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


def by_score_then_id(hits: list[Passage], k: int) -> list[Passage]:
    """The first `k` of `hits` (best first, as a search returned them) by score, equal scores by id.

    A search engine lists equal scores in its own storage order, which differs between two builds of
    one corpus; ordering them by id makes every build, and every BM25 backend, retrieve alike.
    """
    if not hits:
        return []
    kth = hits[min(k, len(hits)) - 1].score
    return sorted((p for p in hits if p.score >= kth), key=lambda p: (-p.score, p.id))[:k]


def ties_past(scores: list[float], k: int, limit: int) -> bool:
    """Whether a search that asked for `limit` hits (scores best first) may have cut a tie with the
    k-th hit, so it must ask for more; past k + MAX_TIED_HITS the tie is left as the engine cut it."""
    return len(scores) >= limit > k and scores[-1] >= scores[k - 1] and limit <= k + MAX_TIED_HITS
