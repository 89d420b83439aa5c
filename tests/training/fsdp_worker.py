"""Train a few steps with the trainer's objective, step plan and pass loop under torch FSDP2
(`fully_shard`) on CPU/gloo, and save the gathered full weights as a from_pretrained folder.

accelerate applies FSDP on GPUs only, so on CPU this script stands in for `accelerator.prepare`:
it shards every decoder block and the root like accelerate's TRANSFORMER_BASED_WRAP policy, and
an adapter gives `loop._forward_backward` the four accelerator members it uses. Run by
tests/training/test_distributed.py:

    torchrun --nproc_per_node 2 tests/training/fsdp_worker.py STUDENT_DIR OUT_DIR
    python tests/training/fsdp_worker.py STUDENT_DIR OUT_DIR          # one process, no sharding
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from stepdistill.training.batching import StepStream, encode_examples
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.formatting import Pair
from stepdistill.training.loop import _forward_backward
from stepdistill.training.models import load_student, save_student
from stepdistill.training.step import Objective, step_weights

STEPS = 3


class FSDPAdapter:
    """The members of an Accelerator that `_forward_backward` uses, for a fully_shard-ed module."""

    def __init__(self, world: int, rank: int):
        self.num_processes, self.process_index, self.device = world, rank, torch.device("cpu")

    @contextlib.contextmanager
    def no_sync(self, module):
        if self.num_processes > 1:
            module.set_requires_gradient_sync(False)  # FSDP2: no reduce-scatter for this backward
        try:
            yield
        finally:
            if self.num_processes > 1:
                module.set_requires_gradient_sync(True)

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()


def examples() -> list[list[Pair]]:
    """Nine step_by_step examples with rationales of very different lengths."""
    out = []
    for i in range(9):
        q = f"is {i} a lucky number?"
        out.append([Pair("predict: " + q, "yes" if i % 2 else "no", 0),
                    Pair("explain: " + q, " ".join(["checked"] * (1 + i * 4 % 13)), 1)])  # fmt: skip
    return out


def main(student_dir: str, out_dir: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    # lr 1e-3: Adam divides by sqrt(v), so a near-zero gradient turns float summation-order differences
    # into visible update differences; at 1e-3 they stay under the 1e-5 the test allows.
    tc = TrainConfig(method="step_by_step", alpha=0.3, batch_size=4, grad_accum=2, max_tokens_per_pass=40,
                     lr=1e-3, precision="fp32")  # fmt: skip
    student = load_student(StudentConfig(model=student_dir), seed=0)
    enc = encode_examples(student.tokenizer, examples(), tc, student.kind)
    stream = StepStream(enc, tc, student.tokenizer.pad_token_id, student.kind, rank, world)
    objective = Objective(student.model, student.kind)
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in objective.base.model.layers:
            fully_shard(layer)
        fully_shard(objective)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=tc.lr)  # after sharding: DTensor params
    keys = objective.sum_keys()
    for step in range(STEPS):
        plan = stream[step]
        weights = step_weights(tc.method, tc.alpha, plan.counts, scale=world)
        _forward_backward(
            FSDPAdapter(world, rank), objective, plan, weights, keys, tc.seed, step * tc.grad_accum
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    state = None
    if world > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(
            objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        state = {k.removeprefix("model."): v for k, v in full.items()}
    if rank == 0:
        save_student(student, Path(out_dir), state_dict=state)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
