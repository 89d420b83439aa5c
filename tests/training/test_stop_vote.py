"""Stop signals under several processes: flags are compared at a fixed schedule that every process
derives alike, not after every step (each comparison makes the host wait for the device)."""

from __future__ import annotations

import torch

from stepdistill.training import loop, preempt
from stepdistill.training.config import TrainConfig
from stepdistill.training.loop import STOP_VOTE_EVERY, _stop_requested, stop_vote_due


class Processes:
    """The part of an Accelerator `_stop_requested` uses, for `n` processes whose other members
    voted `others`; records every all-reduce."""

    def __init__(self, n: int, others: float = 0.0):
        self.num_processes, self.device, self.others, self.reduces = n, torch.device("cpu"), others, 0

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        assert reduction == "sum"
        self.reduces += 1
        return tensor + self.others


def test_votes_fall_on_log_eval_save_boundaries_every_ten_steps_and_the_last_step():
    tc = TrainConfig(log_every=4, save_every=7)
    due = [d for d in range(1, 26) if stop_vote_due(d, tc, 25, eval_at={6})]
    assert STOP_VOTE_EVERY == 10
    assert due == [4, 6, 7, 8, 10, 12, 14, 16, 20, 21, 24, 25]


def test_every_boundary_that_writes_a_checkpoint_votes():
    tc = TrainConfig(log_every=3, save_every=5, eval_every=4)
    eval_at = set(range(4, 41, 4))
    for done in range(1, 41):
        if done in eval_at or done % 5 == 0 or done % 3 == 0:
            assert stop_vote_due(done, tc, 40, eval_at)


def test_several_processes_all_reduce_only_when_a_vote_is_due(monkeypatch):
    monkeypatch.setattr(preempt, "requested", lambda: True)
    procs = Processes(2)
    assert _stop_requested(procs, vote=False) is False and procs.reduces == 0
    assert _stop_requested(procs, vote=True) is True and procs.reduces == 1


def test_a_signal_on_another_process_stops_this_one_at_the_vote(monkeypatch):
    monkeypatch.setattr(preempt, "requested", lambda: False)
    procs = Processes(2, others=1.0)
    assert _stop_requested(procs, vote=True) is True


def test_one_process_reads_its_flag_after_every_step_without_a_collective(monkeypatch):
    monkeypatch.setattr(loop.preempt, "requested", lambda: True)
    procs = Processes(1)
    assert _stop_requested(procs, vote=False) is True and procs.reduces == 0
