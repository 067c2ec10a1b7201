"""POST /documents: add passages at run time (index + gradients), answered with right away."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError

from service.deps import ApiKeyDep, BatcherDep, EngineDep, MetricsDep, SettingsDep
from service.schemas import DocumentsRequest, DocumentsResponse, ErrorResponse

__all__ = ["router"]

router = APIRouter(tags=["documents"])


def _check_limits(body: DocumentsRequest, max_documents: int, max_document_chars: int) -> None:
    """422 for limits that come from the settings (the schema only has hard ceilings)."""
    errors = []
    if len(body.documents) > max_documents:
        errors.append(
            {
                "type": "too_long",
                "loc": ("body", "documents"),
                "msg": f"{len(body.documents)} documents, limit {max_documents}; send fewer per request",
                "input": len(body.documents),
                "ctx": {"max_length": max_documents},
            }
        )
    for i, document in enumerate(body.documents):
        if len(document.text) > max_document_chars:
            errors.append(
                {
                    "type": "string_too_long",
                    "loc": ("body", "documents", i, "text"),
                    "msg": f"text has {len(document.text)} characters, limit {max_document_chars}; split it",
                    "input": document.text[:100] + "...",
                    "ctx": {"max_length": max_document_chars},
                }
            )
    if errors:
        raise RequestValidationError(errors)


@router.post(
    "/documents",
    response_model=DocumentsResponse,
    responses={
        401: {"model": ErrorResponse, "description": "missing or wrong API key"},
        409: {"model": ErrorResponse, "description": "an id already holds a different passage"},
        503: {"model": ErrorResponse, "description": "retrieval backend down; see Retry-After"},
    },
    summary="Index passages and store their gradients; idempotent per id",
)
async def add_documents(
    body: DocumentsRequest,
    engine: EngineDep,
    batcher: BatcherDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    _: ApiKeyDep,
) -> DocumentsResponse:
    _check_limits(body, settings.max_documents, settings.max_document_chars)
    # On the model thread, between answer batches: encoding runs a backward pass.
    documents = [document.to_document() for document in body.documents]
    response = DocumentsResponse.from_result(await batcher.run_exclusive(engine.add_documents, documents))
    metrics.documents_added.inc(response.added)
    return response
