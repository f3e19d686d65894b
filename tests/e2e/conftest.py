"""Everything under e2e/ is in the slow lane: `make test` runs it (and CI), `make test-fast` does not."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)
