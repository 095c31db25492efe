"""Codec server: decrypts Temporal payloads for operators' tools.

Speaks Temporal's remote-codec protocol, so the Temporal UI (``TEMPORAL_CODEC_ENDPOINT``)
and the CLI (``temporal workflow show --codec-endpoint <api>/codec --codec-auth
"Bearer <admin token>"``) can show workflow inputs and results that the server
itself only holds encrypted. Only callers with the deployment's admin token
may use it: a decrypted payload holds trace text from every organisation.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from temporalio.api.common.v1 import Payload

from api.deps import Resources, has_admin_token
from api.errors import ApiError, error_responses
from core.codec import EncryptionCodec, PayloadKeyError

router = APIRouter(prefix="/codec", tags=["operations"], responses=error_responses(400, 401, 404, 413, 422))

# A UI page decodes one history event's payloads at a time; this bounds a request.
MAX_PAYLOADS = 1_000


class CodecPayload(BaseModel):
    """A Temporal payload in proto3 JSON: metadata values and data are base64."""

    metadata: dict[str, str] = Field(default_factory=dict)
    data: str = ""


class CodecPayloads(BaseModel):
    payloads: list[CodecPayload] = Field(max_length=MAX_PAYLOADS)


def _b64decode(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ApiError(422, "invalid_payload", f"{field} is not valid base64") from None


def _to_payload(item: CodecPayload, position: int) -> Payload:
    metadata = {
        key: _b64decode(value, f"payloads[{position}].metadata.{key}") for key, value in item.metadata.items()
    }
    return Payload(metadata=metadata, data=_b64decode(item.data, f"payloads[{position}].data"))


def _to_json(payload: Payload) -> CodecPayload:
    return CodecPayload(
        metadata={key: base64.b64encode(value).decode() for key, value in payload.metadata.items()},
        data=base64.b64encode(payload.data).decode(),
    )


def _codec(request: Request, resources: Resources) -> EncryptionCodec:
    if not has_admin_token(request, resources.settings):
        raise ApiError(
            401,
            "admin_token_required",
            "The codec server needs the admin token as bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )
    codec = EncryptionCodec.from_settings(resources.settings)
    if codec is None:
        raise ApiError(
            404, "payload_encryption_off", "Payload encryption is not configured (AEGIS_PAYLOAD_KEY)"
        )
    return codec


def _apply(body: CodecPayloads, convert: Callable[[Payload], Payload]) -> CodecPayloads:
    results = []
    for position, item in enumerate(body.payloads):
        try:
            results.append(_to_json(convert(_to_payload(item, position))))
        except PayloadKeyError as exc:
            # The message names the key id and the reason, never key material.
            raise ApiError(422, "undecodable_payload", f"payloads[{position}]: {exc}") from None
    return CodecPayloads(payloads=results)


@router.post("/decode", response_model=CodecPayloads)
async def decode(body: CodecPayloads, request: Request, resources: Resources) -> CodecPayloads:
    """Decrypt payloads; payloads that are not encrypted come back unchanged."""
    return _apply(body, _codec(request, resources).decrypt)


@router.post("/encode", response_model=CodecPayloads)
async def encode(body: CodecPayloads, request: Request, resources: Resources) -> CodecPayloads:
    """Encrypt payloads under the current key (the UI uses it to send signals)."""
    return _apply(body, _codec(request, resources).encrypt)
