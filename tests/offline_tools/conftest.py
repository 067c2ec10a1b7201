"""Fixtures for the offline tools: the small published-format files under `fixtures/`."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """Hand-written files in each dataset's published format (law data, original 2Wiki/CWQ/PopQA layouts)."""
    return FIXTURES
