"""The benchmark stack's CPU placement (``bench.stack``'s ``temporal_apart``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.stack import ROOT, popen_on_cpus, split_cpus


def test_split_gives_the_first_cpu_to_temporal_and_the_rest_to_the_others() -> None:
    assert split_cpus({0, 1}) == ({0}, {1})
    assert split_cpus({7, 3, 5}) == ({3}, {5, 7})


def test_split_refuses_a_single_cpu() -> None:
    with pytest.raises(ValueError, match="at least two CPUs"):
        split_cpus({0})


def test_a_process_started_on_cpus_runs_there_and_the_caller_keeps_its_own() -> None:
    own = os.sched_getaffinity(0)
    first = {min(own)}
    child = popen_on_cpus([sys.executable, "-c", "import time; time.sleep(30)"], first)
    try:
        assert os.sched_getaffinity(child.pid) == first
        assert os.sched_getaffinity(0) == own
    finally:
        child.kill()
        child.wait()


def test_pinning_a_process_moves_the_threads_it_already_has() -> None:
    # In a child process: the test's own process keeps its CPUs.
    script = """
import os, threading
from bench.stack import pin_process
started, done = threading.Event(), threading.Event()
def wait():
    started.set()
    done.wait()
thread = threading.Thread(target=wait)
thread.start()
started.wait()
last = {max(os.sched_getaffinity(0))}
pin_process(last)
print(os.sched_getaffinity(thread.native_id) == last and os.sched_getaffinity(0) == last)
done.set()
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "True"
