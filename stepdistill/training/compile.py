"""train.compile: the student's transformer stacks run under torch.compile inside training steps.

What is compiled: the stacks the objective calls (`get_encoder()` and `get_decoder()` of a seq2seq
student, `get_decoder()` of a causal one), where nearly all of a step's FLOPs are. The lm_head on
target tokens, the losses and the soft-target term stay eager. Compiled code runs only inside
`Compiled.active()`, i.e. inside training steps: validation, generation and checkpoints see the
plain modules.

Warm-up and fallback: before the first step of a launch, `warm_up` runs that step's forward and
backward passes once on the unwrapped objective (no gradient synchronisation between processes),
which compiles the stacks for its shapes (a label pass and a rationale pass of different lengths
compile the shape-generic graph too), and then drops the gradients. The step itself then trains as
usual (dropout is re-seeded per micro-batch), so a compiled run trains on the same data with the same
randomness as an eager one. If the warm-up raises, or takes longer than `train.compile_timeout_s`,
the compiled code is discarded (`torch.compiler.reset()`), one line says why, and the run trains
eager. The limit is checked when the warm-up returns: compilation is not interrupted midway (inductor
compiles in worker processes and dynamo fills its caches as it goes; stopping either from outside
could leave them half-written), so it bounds when compiled code is given up, not the warm-up's own
length. Under several processes every process warms up and the decision is shared: all compiled or
all eager. The warm-up's seconds are reported as `train.compile_s` in metrics.json and are not part
of `train.wall_s` or throughput; a later recompilation (a shape the first graphs do not cover) is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from stepdistill.training.device import gather_objects, is_main


def stacks(base: Any, kind: str) -> list[torch.nn.Module]:
    """The transformer stacks the objective runs on: encoder and decoder, or the decoder alone."""
    return [base.get_encoder(), base.get_decoder()] if kind == "seq2seq" else [base.get_decoder()]


class Compiled:
    """Compiled forwards of a student's stacks, switched on within `active()`."""

    backend: str | Callable = "inductor"  # torch.compile's code generator (its default)

    def __init__(self, base: Any, kind: str):
        self.modules = stacks(base, kind)
        self.forwards = [torch.compile(m.forward, backend=self.backend) for m in self.modules]
        self.enabled = True

    @contextmanager
    def active(self) -> Iterator[None]:
        """Calls of the stacks go through their compiled forwards for the duration (when enabled)."""
        if not self.enabled:
            yield
            return
        for module, forward in zip(self.modules, self.forwards):
            module.forward = forward  # an instance attribute shadows the class's forward
        try:
            yield
        finally:
            for module in self.modules:
                del module.forward

    def disable(self) -> None:
        """Train eager from now on and free the compiled code."""
        self.enabled = False
        self.forwards = []
        torch.compiler.reset()


@dataclass
class CompileReport:
    """What metrics.json says about compilation (train.compile_s, train.compiled, train.compile_fallback)."""

    seconds: float
    compiled: bool
    fallback: str | None  # why the run trains eager, when it asked for compilation


def _reason(exc: BaseException) -> str:
    """One line: the error's type and the start of its message (dynamo puts the cause on line 2)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {' '.join(lines[:2])}"[:300]


def warm_up(compiled: Compiled, run: Callable[[], None], timeout_s: float) -> CompileReport:
    """Run `run()` (forward and backward of one step) with compiled stacks; keep them only if it
    succeeded within `timeout_s` on every process. `run` must leave no state behind but gradients."""
    start = time.perf_counter()
    reason = None
    try:
        with compiled.active():
            run()
    except Exception as exc:  # dynamo, inductor or the C++/Triton toolchain: train eager instead
        reason = _reason(exc)
    seconds = time.perf_counter() - start
    if reason is None and seconds > timeout_s:
        reason = f"compiling took {seconds:.1f} s, over train.compile_timeout_s={timeout_s:g}"
    outcomes = gather_objects([(reason, seconds)])  # every process takes the same decision
    seconds = max(s for _, s in outcomes)
    failed = [(rank, r) for rank, (r, _) in enumerate(outcomes) if r is not None]
    if failed:
        compiled.disable()
        rank, why = failed[0]
        if is_main():
            where = f" (process {rank})" if len(outcomes) > 1 else ""
            print(f"[train] torch.compile failed{where}, training eager: {why}", flush=True)
        return CompileReport(seconds, False, why)
    return CompileReport(seconds, True, None)
