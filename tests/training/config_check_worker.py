"""Each process loads a config; process 1 changes train.lr, as a mistyped override on one machine
would. Run by tests/training/test_distributed.py under torchrun:

    torchrun --nproc_per_node 2 tests/training/config_check_worker.py CONFIG
"""

from __future__ import annotations

import os
import sys

from stepdistill.config import load_config
from stepdistill.errors import ConfigError
from stepdistill.training.device import make_accelerator
from stepdistill.training.distributed import check_launch

if __name__ == "__main__":
    overrides = ["--train.lr", "0.5"] if os.environ.get("RANK") == "1" else []
    cfg = load_config(sys.argv[1], overrides)
    accelerator = make_accelerator("fp32", 60)
    try:
        check_launch(accelerator, cfg.train, cfg.student, cfg.model_dump(mode="json"))
    except ConfigError as err:
        print(f"rank {accelerator.process_index}: {err}", flush=True)
        sys.exit(2)
    sys.exit(0)
