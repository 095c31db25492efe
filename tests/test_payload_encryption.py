"""Temporal payload encryption (AES-256-GCM) and the codec server operators use to read it."""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from api.app import create_app
from api.deps import AppResources
from core.codec import ENCODING, EncryptionCodec, PayloadKeyError, parse_keys
from core.settings import Settings
from core.temporal import connect
from core.worker import build_workers
from models.schemas import workflow_id_for
from tests.conftest import ADMIN_TOKEN
from tests.helpers import OrgClient, with_own_queues


def new_key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def codec_for(settings: Settings, **keys: str) -> EncryptionCodec:
    update = {name: SecretStr(value) for name, value in keys.items()}
    codec = EncryptionCodec.from_settings(settings.model_copy(update=update))
    assert codec is not None
    return codec


def test_a_payload_round_trips_and_its_plain_text_is_gone(settings: Settings) -> None:
    codec = codec_for(settings, payload_key=new_key("k1"))
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"input": "my SSN is 123-45-6789"}')
    sealed = codec.encrypt(original)
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata["encryption-key-id"] == b"k1"
    assert b"123-45-6789" not in sealed.SerializeToString()
    assert codec.encrypt(original).data != sealed.data  # a fresh nonce each time
    assert codec.decrypt(sealed) == original


def test_rotation_keeps_old_payloads_readable_only_with_the_old_key(settings: Settings) -> None:
    first, second = new_key("k1"), new_key("k2")
    old_payload = codec_for(settings, payload_key=first).encrypt(Payload(data=b"before rotation"))
    rotated = codec_for(settings, payload_key=second, payload_old_keys=first)
    assert rotated.decrypt(old_payload).data == b"before rotation"
    assert rotated.encrypt(Payload(data=b"x")).metadata["encryption-key-id"] == b"k2"
    with pytest.raises(PayloadKeyError, match="'k1', which is not configured"):
        codec_for(settings, payload_key=second).decrypt(old_payload)


def test_tampering_or_a_swapped_key_id_is_detected(settings: Settings) -> None:
    codec = codec_for(settings, payload_key=new_key("k1"), payload_old_keys=new_key("k0"))
    sealed = codec.encrypt(Payload(data=b"verdict: pass"))
    flipped = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(PayloadKeyError, match="failed authentication"):
        codec.decrypt(flipped)
    relabelled = Payload(metadata={**sealed.metadata, "encryption-key-id": b"k0"}, data=sealed.data)
    with pytest.raises(PayloadKeyError, match="failed authentication"):
        codec.decrypt(relabelled)


def test_unencrypted_payloads_pass_through(settings: Settings) -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b"{}")
    assert codec_for(settings, payload_key=new_key("k1")).decrypt(plain) == plain


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no-separator", "entry 1 must be '<id>:<base64 key>'"),
        ("k1:not base64!", "key 'k1' is not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "key 'k1' must be 32 bytes"),
        (f"{new_key('k1')},{new_key('k1')}", "lists key id 'k1' twice"),
    ],
)
def test_malformed_keys_are_refused_naming_the_setting_not_the_key(value: str, message: str) -> None:
    with pytest.raises(PayloadKeyError, match=message) as caught:
        parse_keys(value, "AEGIS_PAYLOAD_OLD_KEYS")
    assert "AEGIS_PAYLOAD_OLD_KEYS" in str(caught.value)
    key_material = value.partition(":")[2]
    if key_material:
        assert key_material not in str(caught.value)


@dataclass
class EncryptedStack:
    api: httpx.AsyncClient
    settings: Settings
    plain_client: Client  # what the Temporal server (or anyone reading it) sees


@pytest.fixture
async def encrypted(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], temporal_client: Client
) -> AsyncIterator[EncryptedStack]:
    """API and workers that encrypt every payload, on task queues of their own."""
    secured = with_own_queues(settings, "encrypted", payload_key=SecretStr(new_key("k1")))
    client = await connect(secured)
    app = create_app(resources=AppResources(secured, session_factory, client))
    async with contextlib.AsyncExitStack() as running:
        for worker in build_workers(client, session_factory, secured):
            await running.enter_async_context(worker)
        api = await running.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://aegis.test")
        )
        yield EncryptedStack(api, secured, temporal_client)


async def test_the_temporal_server_holds_only_ciphertext_and_operators_can_decode_it(
    encrypted: EncryptedStack,
) -> None:
    org = await OrgClient.create(encrypted.api, f"encrypted-{uuid.uuid4().hex[:6]}")
    canary = f"canary-{uuid.uuid4().hex}"
    trace_id = await org.submit(input=f"Is {canary} safe?", output=f"Yes, {canary} is fine.")
    evaluation = await org.wait_for_evaluation(trace_id)
    assert evaluation["status"] in {"completed", "awaiting_review"}

    # Read straight from the server, without the key: no trace text anywhere.
    handle = encrypted.plain_client.get_workflow_handle(workflow_id_for(uuid.UUID(trace_id)))
    history = await handle.fetch_history()
    raw = history.to_json()
    assert canary not in raw
    assert base64.b64encode(canary.encode()).decode()[:16] not in raw
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert payload.metadata["encoding"] == ENCODING

    # The codec server decodes it for the admin, and only for the admin.
    body = {"payloads": [MessageToDict(payload)]}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    decoded = await encrypted.api.post("/codec/decode", json=body, headers=admin)
    assert decoded.status_code == 200, decoded.text
    [plain] = decoded.json()["payloads"]
    assert base64.b64decode(plain["metadata"]["encoding"]) == b"json/plain"
    assert trace_id in base64.b64decode(plain["data"]).decode()

    refused = await encrypted.api.post("/codec/decode", json=body, headers=org.headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "admin_token_required"

    # Encode then decode is the identity (the UI encodes what it sends as signals).
    encoded = await encrypted.api.post("/codec/encode", json=decoded.json(), headers=admin)
    assert encoded.status_code == 200
    again = await encrypted.api.post("/codec/decode", json=encoded.json(), headers=admin)
    assert again.json() == decoded.json()


async def test_the_codec_server_refuses_bad_input_clearly(
    encrypted: EncryptedStack, api: httpx.AsyncClient
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    not_base64 = await encrypted.api.post(
        "/codec/decode", json={"payloads": [{"metadata": {}, "data": "%%%"}]}, headers=admin
    )
    assert not_base64.status_code == 422
    assert "payloads[0].data" in not_base64.json()["error"]["message"]

    foreign = EncryptionCodec("k9", {"k9": os.urandom(32)}).encrypt(Payload(data=b"x"))
    unknown = await encrypted.api.post(
        "/codec/decode", json={"payloads": [MessageToDict(foreign)]}, headers=admin
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "undecodable_payload"

    # The default test deployment has no payload key.
    off = await api.post("/codec/decode", json={"payloads": []}, headers=admin)
    assert off.status_code == 404
    assert off.json()["error"]["code"] == "payload_encryption_off"
