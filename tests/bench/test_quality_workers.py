"""Concurrent quality workers: a cell is claimed by exactly one process (atomic claim files), a stale
claim (its process gone) is taken over, and workers sharing a results file lose no cell."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from quality import Cell, claim, load_results, run_grid

KEYS = [f"task=svamp,method=m{i},seed=0,fraction=1" for i in range(24)]


def _claimer(folder: str, barrier, out) -> None:
    won = [k for k in KEYS if claim(Path(folder), k)]
    barrier.wait()  # stay alive until every process has tried: live claims are never taken over
    out.put((os.getpid(), won))


def test_each_cell_is_claimed_by_exactly_one_process(tmp_path):
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(tmp_path), barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    won = [out.get(timeout=60)[1] for _ in procs]
    for p in procs:
        p.join(timeout=60)
    flat = [k for w in won for k in w]
    assert sorted(flat) == sorted(KEYS)  # every cell claimed, none twice


def test_a_live_claim_holds_and_a_stale_one_is_taken_over(tmp_path):
    assert claim(tmp_path, KEYS[0]) is True
    assert claim(tmp_path, KEYS[0]) is False  # this (live) process holds it
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "stale.claim").write_text(f"{socket.gethostname()} {gone.pid}\n")
    key = "stale"
    assert claim(tmp_path, key) is True
    assert (tmp_path / "stale.claim").read_text().split()[1] == str(os.getpid())


def _worker(path: str, claims: str, log: str) -> None:
    def runner(cell: Cell) -> dict:
        with open(log, "a") as fh:
            fh.write(cell.key + "\n")
        time.sleep(0.02)
        return {"test_accuracy": 0.5}

    cells = [Cell("svamp", f"m{i}", 0, 1.0) for i in range(12)]
    run_grid(cells, Path(path), runner, Path(claims))


def test_workers_sharing_a_results_file_run_every_cell_once(tmp_path):
    path, log = tmp_path / "quality-t.json", tmp_path / "ran.txt"
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_worker, args=(str(path), str(tmp_path / "claims"), str(log))) for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    ran = log.read_text().split()
    assert len(ran) == len(set(ran)) == 12
    assert len(load_results(path)["cells"]) == 12
    assert not list((tmp_path / "claims").glob("*.claim"))  # released once written
