"""The workers' workflow runner answers "no serialization context" without
entering the sandbox, which is right only while no codec or external storage
uses contexts: it refuses a data converter for which that does not hold."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext

from core.codec import data_converter
from core.sandbox import ContextFreeSandboxRunner, workflow_runner
from core.settings import Settings


class ContextBoundCodec(PayloadCodec, WithSerializationContext):
    """A codec that would encode differently per workflow or activity."""

    def with_context(self, context: SerializationContext) -> ContextBoundCodec:
        return self

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def test_plain_pydantic_payloads_run_on_the_context_free_runner() -> None:
    assert isinstance(workflow_runner(pydantic_data_converter), ContextFreeSandboxRunner)


def test_encrypted_payloads_run_on_it_too() -> None:
    # The encryption codec seals every payload the same way, whatever the context.
    key = "k1:" + base64.b64encode(bytes(32)).decode()
    converter = data_converter(Settings(payload_key=key))
    assert converter.payload_codec is not None
    assert isinstance(workflow_runner(converter), ContextFreeSandboxRunner)


def test_a_codec_that_uses_contexts_is_refused() -> None:
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=ContextBoundCodec())
    with pytest.raises(ValueError, match="serialization contexts"):
        workflow_runner(converter)


def test_external_storage_is_refused() -> None:
    converter = dataclasses.replace(pydantic_data_converter, external_storage=object())
    assert not ContextFreeSandboxRunner.serves(converter)
    with pytest.raises(ValueError):
        workflow_runner(converter)
