"""Fixtures of the teacher tests: a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import pytest
from scripted_server import ScriptedServer


@pytest.fixture
def scripted_server():
    server = ScriptedServer()
    yield server
    server.close()
