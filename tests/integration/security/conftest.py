from __future__ import annotations

from collections.abc import Iterator

import pytest

from .secure import SecureBroker, secure_broker


@pytest.fixture(scope="session")
def secure() -> Iterator[SecureBroker]:
    with secure_broker() as broker:
        yield broker
