"""One router per resource: answer (POST /answer), documents (POST /documents), health (probes, metrics)."""

from service.routes import answer, documents, health

__all__ = ["answer", "documents", "health"]
