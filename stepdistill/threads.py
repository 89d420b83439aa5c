"""CPU thread behaviour, set once before torch is imported."""

from __future__ import annotations

import os
import sys


def sleep_idle_cpu_threads() -> bool:
    """Let idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE) unless the user chose.

    With spinning threads, two torch jobs sharing 2 cores ran a decoding step 20x slower (each thread
    spins while its partner waits to be scheduled); sleeping costs ~15% on an idle machine. OpenMP
    reads the setting when torch is imported, so it applies only when torch is not loaded yet.
    Returns whether it was set."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
