"""tests/system: new tracking stores start from one template (tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _stores(stores_from_the_template):
    yield
