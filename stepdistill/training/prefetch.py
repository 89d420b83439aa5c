"""Collate the next optimizer steps on a background thread while the current one trains.

    with Prefetcher(collate, range(start, total), depth=2) as ahead:
        for step in range(start, total):
            item = ahead.get(step)

`collate(step)` must be a pure function of the step (StepStream is: the data order depends on
(seed, epoch) only), so the items, and therefore the run, are the same whatever the depth; depth 0
calls `collate` on the caller's thread. On CUDA the collated tensors are copied into pinned
(page-locked) host memory on the background thread (`pin`), so that `to_device` can copy them with
`non_blocking=True`: the host goes on queueing kernels while the copy runs.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import torch

from stepdistill.training.batching import Batch, RankStep

T = TypeVar("T")
_POLL_S = 0.1  # how often a blocked producer looks whether the consumer has gone


def pin(plan: RankStep) -> RankStep:
    """`plan` with every batch's tensors in pinned host memory (a batch used twice, such as the
    filler of zero-weight passes, is pinned once)."""
    pinned: dict[int, Batch] = {}

    def one(batch: Batch) -> Batch:
        if id(batch) not in pinned:
            pinned[id(batch)] = batch.map_tensors(torch.Tensor.pin_memory)
        return pinned[id(batch)]

    micro = [[(one(batch), real) for batch, real in passes] for passes in plan.micro]
    return dataclasses.replace(plan, micro=micro)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """`batch` on `device`; asynchronous from pinned memory (the copy is ordered before any kernel
    queued after it on the current stream, so no synchronisation is needed)."""
    return batch.to(device, non_blocking=True)


class Prefetcher(Generic[T]):
    """`collate(step)` for each of `steps` in order, computed up to `depth` steps ahead."""

    def __init__(self, collate: Callable[[int], T], steps: Iterable[int], depth: int):
        self._collate, self._steps, self._depth = collate, iter(steps), depth
        self._queue: queue.Queue[tuple[int | None, Any, BaseException | None]] = queue.Queue(max(1, depth))
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Prefetcher[T]:
        if self._depth > 0:
            self._thread = threading.Thread(target=self._work, name="stepdistill-prefetch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, entry: tuple[int | None, Any, BaseException | None]) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for step in self._steps:
                if not self._put((step, self._collate(step), None)):
                    return
        except BaseException as exc:  # handed to the training thread, which raises it
            self._put((None, None, exc))

    def get(self, step: int) -> T:
        """The item of `step`; steps must be asked for in the order given."""
        if self._thread is None:
            expected = next(self._steps)
            item, error = (self._collate(expected), None) if expected == step else (None, None)
        else:
            expected, item, error = self._queue.get()
        if error is not None:
            raise error
        if expected != step:
            raise RuntimeError(f"prefetch: step {step} asked for, step {expected} collated")
        return item

    def close(self) -> None:
        """Stop the background thread and drop what it collated ahead."""
        self._closed.set()
        if self._thread is not None:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._thread.join()
            self._thread = None
