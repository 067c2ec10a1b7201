"""One router per resource: answer (POST /answer), documents (POST /documents), health (probes, metrics),
openai (the OpenAI-compatible /v1), page (the page at / and the offline /docs)."""

from service.routes import answer, documents, health, openai, page

__all__ = ["answer", "documents", "health", "openai", "page"]
