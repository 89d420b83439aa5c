"""Stop signals under several processes: every process compares its flag after every step, so all
of them stop at the same step boundary; one process needs no collective."""

from __future__ import annotations

import torch

from stepdistill.training import preempt


class Processes:
    """The part of an Accelerator `stop_requested` uses, for `n` processes whose other members
    voted `others`; records every all-reduce."""

    def __init__(self, n: int, others: float = 0.0):
        self.num_processes, self.device, self.others, self.reduces = n, torch.device("cpu"), others, 0

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        assert reduction == "sum"
        self.reduces += 1
        return tensor + self.others


def test_several_processes_compare_flags_at_every_step(monkeypatch):
    monkeypatch.setattr(preempt, "requested", lambda: False)
    procs = Processes(2)
    assert [preempt.stop_requested(procs) for _ in range(3)] == [False, False, False]
    assert procs.reduces == 3


def test_a_signal_on_another_process_stops_this_one(monkeypatch):
    monkeypatch.setattr(preempt, "requested", lambda: False)
    assert preempt.stop_requested(Processes(2, others=1.0)) is True


def test_one_process_reads_its_flag_without_a_collective(monkeypatch):
    monkeypatch.setattr(preempt, "requested", lambda: True)
    procs = Processes(1)
    assert preempt.stop_requested(procs) is True and procs.reduces == 0
