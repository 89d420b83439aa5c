"""Process-wide settings made once where the CLI starts, before torch and transformers load: how idle
CPU threads wait, and which progress bars show."""

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


def quiet_library_bars() -> None:
    """Progress bars belong to our stages (one per training, one for annotation): transformers' and
    the hub's bars ("Loading weights", "Writing model shards", downloads) are switched off, unless the
    user set HF_HUB_DISABLE_PROGRESS_BARS. The variable is read when huggingface_hub is imported and
    is inherited by child processes; where transformers is loaded already, it is told directly."""
    if os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1") != "1":
        return
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
