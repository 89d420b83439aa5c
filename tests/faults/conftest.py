"""Fixtures of the fault-injection suite (helpers live in faultkit.py, the scripted teacher server in
tests/teachers/scripted_server.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "teachers"))

from faultkit import write_train_config  # noqa: E402


@pytest.fixture
def train_config():
    return write_train_config
