"""`stepdistill run` makes idle OpenMP threads sleep, unless torch is loaded or the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

from stepdistill.threads import sleep_idle_cpu_threads

PROBE = (
    "import os; from stepdistill.threads import sleep_idle_cpu_threads as s; "
    "print(s(), os.environ.get('OMP_WAIT_POLICY'))"
)


def _probe(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_passive_wait_is_set_before_torch_loads():
    assert _probe() == "True PASSIVE"


def test_the_users_choice_is_kept():
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == "False ACTIVE"


def test_nothing_changes_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401  (loaded: OpenMP has read its settings already)

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert sleep_idle_cpu_threads() is False and "OMP_WAIT_POLICY" not in os.environ
