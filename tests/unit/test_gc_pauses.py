"""Freezing the startup objects keeps them out of later passes, but not the garbage of startup."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from core.gc_pauses import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezing_keeps_live_objects_out_of_passes_and_frees_startup_garbage(unfrozen: None) -> None:
    kept = Node()
    garbage = Node()
    garbage_alive = weakref.ref(garbage)
    del garbage
    gc.disable()  # no automatic pass between the lines below
    try:
        freeze_startup_objects()
        assert garbage_alive() is None  # collected before the freeze, not frozen for ever
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())  # out of the collector's sight
    finally:
        gc.enable()
