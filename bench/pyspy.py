"""Where a worker's time goes: ``py-spy record`` on its pool processes, summarized.

Optional: used only when ``py-spy`` is installed (``pip install py-spy``; not a project
dependency). Samples every pool process of one worker node at 100 Hz, once including idle time
(``--idle``: wall time, so waiting on SQLite locks, fsync, Redis and HTTPS shows up) and once
on-CPU only. The summary gives, per cioguard function, the share of samples in which it was on
the stack (inclusive), and the share of the leaf frames by library and function.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Stack, attributes, final_count, process_stats, wait_for

_FRAME = re.compile(r"(?P<fn>\S+) \((?P<path>[^:]*):\d+\)")


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, or on the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def pool_pids(main_pid: int) -> list[int]:
    """The pool processes of a worker node (its process group, minus the main process)."""
    return [pid for pid, f in process_stats() if int(f[2]) == main_pid and pid != main_pid]


def record(pids: list[int], seconds: int, *, idle: bool = True) -> list[Path]:
    """Record each pid for ``seconds`` (collapsed stacks); returns the files written.

    ``idle=True`` samples waiting threads too (wall time: lock waits, fsync, network);
    ``idle=False`` only on-CPU samples (where the CPU time goes).
    """
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed")
    out_dir = Path(tempfile.mkdtemp(prefix="cioguard-pyspy-"))
    procs, files = [], []
    for pid in pids:
        path = out_dir / f"{pid}.txt"
        cmd = [exe, "record", "-p", str(pid), *(["--idle"] if idle else []), "-r", "100",
               "-d", str(seconds), "-f", "raw", "-o", str(path)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        files.append(path)
    for proc in procs:
        proc.wait(timeout=seconds + 60)
    return [f for f in files if f.exists()]


def _label(frame: str) -> tuple[str, str] | None:
    match = _FRAME.match(frame)
    if match is None:
        return None
    path = match["path"].split("site-packages/")[-1]
    module = path.removesuffix(".py").replace("/", ".")
    return module, match["fn"]


def summarize(files: list[Path], top: int = 30) -> dict[str, Any]:
    """Inclusive share per cioguard function and leaf share per library, in percent."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            count = int(count_text)
            total += count
            labels = [lab for lab in map(_label, stack.split(";")) if lab]
            ours = {f"{m}.{fn}" for m, fn in labels if m.startswith("cioguard.")}
            for name in ours:
                inclusive[name] += count
            if labels:
                module, fn = labels[-1]
                leaves[f"{module.split('.')[0]}: {fn}"] += count

    def pct(counter: collections.Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / max(total, 1), 1) for k, v in counter.most_common(top)}

    return {"samples": total, "inclusive_pct": pct(inclusive), "leaf_pct": pct(leaves)}


def profile_cioguard(
    stack: Stack, *, jobs: int, seconds: int, concurrency: int = 2, batch: bool = False
) -> dict[str, Any]:
    """py-spy on the pool processes of one cioguard node draining ``jobs`` identifies at an
    unlimited rate: ``seconds`` of wall-time samples, then ``seconds`` of on-CPU samples."""
    stack.phase()
    env = stack.env(CIOGUARD_BATCH=int(batch))
    producer = stack.producer(env)
    [worker] = stack.start_workers(env, nodes=1, concurrency=concurrency)
    try:
        for i in range(20):
            producer.identify(f"warm-{i}", attributes(i))
        wait_for(lambda: final_count(producer.audit), 20, timeout_s=120)
        stack.pause_consumers()
        time.sleep(0.5)
        for i in range(jobs):
            producer.identify(f"person-{i}", attributes(i))
        stack.resume_consumers()
        pids = pool_pids(worker.pid)
        wall = summarize(record(pids, seconds, idle=True))
        cpu = summarize(record(pids, seconds, idle=False))
        left = stack.queue_length()
        return {"seconds": seconds, "batch": batch, "queue_left_after": left, "wall": wall,
                "cpu": cpu}  # fmt: skip
    finally:
        stack.stop_workers()
        producer.audit.dispose()
        producer.celery.close()
