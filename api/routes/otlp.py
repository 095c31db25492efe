"""OTLP/HTTP trace ingestion: ``POST /v1/traces``, as an OpenTelemetry exporter sends it.

Point an exporter at the API (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=
http://aegis:8000/v1/traces``) with the API key in a header
(``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer <key>``). Protobuf or
JSON bodies, optionally gzip-compressed. The spans of LLM calls become
traces (``api/otlp.py``), all of a request's in one INSERT; other spans are
ignored. The answer is an ``ExportTraceServiceResponse`` in the request's
encoding, with ``partial_success`` counting the LLM spans that could not
be stored and why, as OTLP defines.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from api.deps import CurrentCaller, Resources
from api.errors import AUTHENTICATED_ERRORS, ApiError
from api.ingest import ingest
from api.otlp import map_request

router = APIRouter(tags=["opentelemetry"], responses=AUTHENTICATED_ERRORS)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def _decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    """The body, gunzipped to at most ``limit`` bytes (AEGIS_MAX_REQUEST_BYTES,
    as for an uncompressed body): a small body must not inflate without end."""
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ApiError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit)
    except zlib.error:
        raise ApiError(400, "invalid_otlp", "The body is not valid gzip") from None
    if inflater.unconsumed_tail:
        raise ApiError(413, "payload_too_large", f"The body inflates to more than {limit} bytes")
    if not inflater.eof:
        raise ApiError(400, "invalid_otlp", "The body is not valid gzip (truncated)")
    return data


def _decoded(body: bytes, content_type: str) -> dict[str, Any]:
    if content_type == PROTOBUF:
        try:
            message = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            raise ApiError(400, "invalid_otlp", "The body is not an OTLP ExportTraceServiceRequest") from None
        return MessageToDict(message)
    try:
        decoded = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_otlp", "The body is not JSON") from None
    if not isinstance(decoded, dict):
        raise ApiError(400, "invalid_otlp", "The body must be a JSON object with resourceSpans")
    return decoded


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
)
async def export_traces(request: Request, caller: CurrentCaller, resources: Resources) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (PROTOBUF, JSON):
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be {PROTOBUF} or {JSON}")
    body = _decompressed(
        await request.body(),
        request.headers.get("content-encoding", "").strip().lower(),
        resources.settings.max_request_bytes,
    )
    try:
        mapped = map_request(_decoded(body, content_type), from_protobuf=content_type == PROTOBUF)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ApiError(400, "invalid_otlp", "The body does not follow the OTLP trace structure") from None
    limit = resources.settings.max_batch_size
    if len(mapped.traces) > limit:
        raise ApiError(
            413, "too_many_spans", f"At most {limit} LLM spans per request; export smaller batches"
        )
    if mapped.traces:
        await ingest(resources, caller.organization_id, mapped.traces)
    answer = ExportTraceServiceResponse()
    if mapped.rejected:
        answer.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=mapped.rejected, error_message="; ".join(mapped.reasons))
        )
    if content_type == PROTOBUF:
        return Response(answer.SerializeToString(), media_type=PROTOBUF)
    return Response(json.dumps(MessageToDict(answer)), media_type=JSON)
