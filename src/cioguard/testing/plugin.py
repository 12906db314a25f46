"""The pytest plugin (entry point ``pytest11: cioguard``): the ``cioguard_recorder`` fixture.

Loaded by pytest in every project where cioguard is installed, so it imports nothing of cioguard
until a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cioguard.testing import Recorder


@pytest.fixture
def cioguard_recorder() -> Iterator[Recorder]:
    """Record the cioguard calls the test makes instead of queuing them (see cioguard.testing)."""
    from cioguard.testing import recording

    with recording() as recorder:
        yield recorder
