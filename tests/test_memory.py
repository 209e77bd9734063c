"""runner.memory: large set-ups return freed heap and stop numpy's huge-page advice; small
ones (every textbook fit) and a person's own NUMPY_MADVISE_HUGEPAGE are left alone."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from runner.memory import TRIM_BYTES, release_freed, small_pages


def test_small_set_ups_leave_the_process_alone(monkeypatch):
    assert release_freed(TRIM_BYTES - 1) is False
    assert small_pages(TRIM_BYTES - 1) is False
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    assert small_pages(1e12) is False  # the person's setting wins


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and madvise are Linux's")
def test_large_set_up_stops_huge_pages(monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    switch = np._core.multiarray._set_madvise_hugepage
    before = switch(True)  # a known state; the process's own is restored below
    try:
        assert small_pages(TRIM_BYTES) is True
        assert switch(True) is False  # the advice was off
        assert release_freed(TRIM_BYTES) in (True, False)  # malloc_trim ran (1 if it returned memory)
    finally:
        switch(before)
