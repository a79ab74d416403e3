"""Shared by every test: commands under test configure structlog globally (``cli.main``
does), so each test starts from structlog's defaults again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
