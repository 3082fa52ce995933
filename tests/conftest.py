"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture
def cache_dir(tmp_path_factory, monkeypatch):
    """Data and compilation caches under one folder per test session (not the user's)."""
    root = tmp_path_factory.getbasetemp() / "scaling-cache"
    monkeypatch.setenv("SCALING_CACHE_DIR", str(root))
    return root
