"""Encryption of Temporal payloads (AES-256-GCM), on when ``AEGIS_PAYLOAD_KEY`` is set.

Workflow inputs, results, signals, updates and activity arguments carry
trace text; with a payload key they reach the Temporal server (its database,
its UI, its exports) only as ciphertext. Failure messages and stack traces
are moved into an encrypted payload too.

Key rotation: payloads record the id of the key that encrypted them.
``AEGIS_PAYLOAD_KEY`` encrypts everything new; keys listed in
``AEGIS_PAYLOAD_OLD_KEYS`` still decrypt histories written before the
rotation. A payload without the encrypted encoding passes through as it is,
so histories from before encryption was switched on stay readable.

Format of a key: ``<id>:<base64 of 32 random bytes>``, e.g. made by
``python3 -c "import base64, os; print('k1:' + base64.b64encode(os.urandom(32)).decode())"``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverter, PayloadCodec

from core.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_NONCE_BYTES = 12
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class PayloadKeyError(ValueError):
    """A payload key setting is malformed, or a payload names a key we do not have.

    Messages name the setting or the key id, never key material.
    """


def parse_keys(value: str, setting: str) -> dict[str, bytes]:
    """``id:base64key[,id:base64key...]`` as {id: 32-byte key}."""
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(part.strip() for part in value.split(",")):
        if not entry:
            continue
        key_id, separator, encoded = entry.partition(":")
        if not separator or not _KEY_ID_RE.match(key_id):
            raise PayloadKeyError(f"{setting} entry {position + 1} must be '<id>:<base64 key>'")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise PayloadKeyError(f"{setting} key {key_id!r} is not valid base64") from None
        if len(key) != 32:
            raise PayloadKeyError(f"{setting} key {key_id!r} must be 32 bytes (AES-256)")
        if key_id in keys:
            raise PayloadKeyError(f"{setting} lists key id {key_id!r} twice")
        keys[key_id] = key
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole payload (metadata and data); the key id is
    bound as associated data, so a payload cannot be passed off under another key."""

    def __init__(self, current_id: str, keys: dict[str, bytes]) -> None:
        if current_id not in keys:
            raise PayloadKeyError(f"no key with id {current_id!r}")
        self.current_id = current_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> EncryptionCodec | None:
        if settings.payload_key is None:
            return None
        current = parse_keys(settings.payload_key.get_secret_value(), "AEGIS_PAYLOAD_KEY")
        if len(current) != 1:
            raise PayloadKeyError("AEGIS_PAYLOAD_KEY must hold exactly one '<id>:<base64 key>'")
        old = {}
        if settings.payload_old_keys is not None:
            old = parse_keys(settings.payload_old_keys.get_secret_value(), "AEGIS_PAYLOAD_OLD_KEYS")
        [current_id] = current
        if current_id in old and old[current_id] != current[current_id]:
            raise PayloadKeyError(f"key id {current_id!r} names two different keys")
        return cls(current_id, {**old, **current})

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE_BYTES)
        key_id = self.current_id.encode()
        sealed = self._ciphers[self.current_id].encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(f"payload was encrypted with key {key_id!r}, which is not configured")
        try:
            plain = cipher.decrypt(payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadKeyError(f"payload under key {key_id!r} failed authentication") from None
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]


class EncryptedFailureConverter(DefaultFailureConverter):
    """Failure messages and stack traces travel inside an (encrypted) payload."""

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)


def data_converter(settings: Settings) -> DataConverter:
    """The pydantic data converter, encrypting when a payload key is configured."""
    codec = EncryptionCodec.from_settings(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter, payload_codec=codec, failure_converter_class=EncryptedFailureConverter
    )
