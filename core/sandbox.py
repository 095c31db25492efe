"""How workers run workflow code."""

from __future__ import annotations

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import (
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WithSerializationContext,
)
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import Info


def workflow_runner(data_converter: DataConverter) -> SandboxedWorkflowRunner:
    """Temporal's workflow sandbox, without a fresh import of the workflow
    modules for every workflow run, and without entering the sandbox to
    name each payload's serialization context (see ``ContextFreeSandboxRunner``).

    By default the sandbox re-imports each workflow module, and what it
    imports that is not passed through, for every run: in replay of the
    recorded histories 15.7-19.1 ms of CPU per evaluation, against 9.7-15.1
    ms with every module passed through. Under ``bench.pipeline`` the
    worker's peak RSS fell from 277-298 MB to 262-265 MB; its throughput
    moved less than the machine's drift. Calls that are not deterministic
    (the clock, random, I/O) are still refused at run time; what is given up
    is a fresh copy of module globals per run, which workflow modules here
    never write (tests/test_workflow_hygiene.py checks for ``global``).
    """
    if not ContextFreeSandboxRunner.serves(data_converter):
        raise ValueError(
            "the data converter's payload codec or external storage uses serialization "
            "contexts; run workflows with temporalio's SandboxedWorkflowRunner instead"
        )
    return ContextFreeSandboxRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())


class ContextFreeSandboxRunner(SandboxedWorkflowRunner):
    """The sandbox, minus a cost that buys this project nothing.

    Before and after every workflow activation the SDK walks its payloads
    three times (reference decoding, external storage, the codec) and for
    each one asks the workflow instance which serialization context applies
    to it: a sandboxed instance answers by ``exec`` of a small code string
    inside the sandbox, six times per payload. Those passes use only the
    payload codec and the external storage; the payloads' own conversion
    (pydantic) happens inside the workflow, unaffected. A codec that does
    not implement ``WithSerializationContext`` (ours encrypts the same way
    whatever the context) and no external storage make every answer
    irrelevant, so instances here answer "no context" without entering the
    sandbox. ``serves`` checks that premise; ``workflow_runner`` refuses a
    converter for which it does not hold. Replaying a recorded evaluation
    took 7.4-8.4 ms of CPU instead of 9.5 with it.
    """

    @staticmethod
    def serves(data_converter: DataConverter) -> bool:
        return data_converter.external_storage is None and not isinstance(
            data_converter.payload_codec, WithSerializationContext
        )

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(super().create_instance(det))


class _ContextFreeInstance(WorkflowInstance):
    def __init__(self, sandboxed: WorkflowInstance) -> None:
        self._sandboxed = sandboxed

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self._sandboxed.activate(act)

    def get_serialization_context(self, command_info: object) -> SerializationContext | None:
        return None

    def get_external_store_context(self, command_info: object) -> StorageDriverStoreContext:
        return StorageDriverStoreContext()

    def get_info(self) -> Info:
        return self._sandboxed.get_info()

    def get_thread_id(self) -> int | None:
        return self._sandboxed.get_thread_id()
