"""Fixtures shared by the apache-md end-to-end tests."""
from __future__ import annotations

import pytest

from tests.e2e.mdenv import MDEnv


@pytest.fixture
def env(apache, pebble):
    """apache-md on a fresh private Apache, pointed at the session's Pebble.
    Modules that need another CA set-up (e.g. OCSP) override this fixture."""
    e = MDEnv(apache, pebble)
    yield e
    e.stop_workers()
