"""CPU and memory of the stack's processes, sampled while a load runs.

A background thread samples, every ``period`` seconds, each named process's
CPU time (user + system, children included) and RSS with psutil, plus the
whole machine's busy CPU time, so that a window's rates can be computed after
the fact: per process, for the stack, for the load generator, and for
everything else on the machine (other people's work shares these two cores).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class Sample:
    at: float  # time.monotonic()
    cpu: dict[str, float]  # process name -> CPU seconds so far
    rss: dict[str, int]  # process name -> bytes
    machine_busy: float  # whole machine, CPU seconds so far


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


@dataclass
class Meter:
    processes: dict[str, int]  # name -> pid
    period: float = 0.5
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in self.processes.items()}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self._procs[name] = psutil.Process(pid)

    def remove(self, name: str) -> None:
        with self._lock:
            self._procs.pop(name, None)

    def sample(self) -> Sample:
        cpu, rss = {}, {}
        with self._lock:
            procs = dict(self._procs)
        for name, p in procs.items():
            kind = name.split("#", 1)[0]  # replicas ("orchestrator#2") count as their service
            try:
                with p.oneshot():
                    cpu[kind] = cpu.get(kind, 0.0) + _cpu(p)
                    rss[kind] = rss.get(kind, 0) + p.memory_info().rss
            except psutil.Error:
                pass
        s = Sample(time.monotonic(), cpu, rss, _machine_busy())
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self) -> "Meter":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def window(self, start: float, end: float) -> tuple[Sample, Sample] | None:
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return None
        return inside[0], inside[-1]

    def rates(self, start: float, end: float, names: list[str]) -> dict[str, float]:
        """CPU use in [start, end], as a fraction of one core: each named
        process, ``stack`` (their sum), ``machine`` and ``machine_other``
        (the machine minus every process this meter watches)."""
        w = self.window(start, end)
        if w is None:
            return {}
        a, b = w
        dt = b.at - a.at
        out = {n: (b.cpu.get(n, 0.0) - a.cpu.get(n, 0.0)) / dt for n in b.cpu if n in a.cpu}
        out["stack"] = sum(out.get(n, 0.0) for n in names)
        out["machine"] = (b.machine_busy - a.machine_busy) / dt
        out["machine_other"] = out["machine"] - sum(v for k, v in out.items() if k in b.cpu)
        return out

    def peak_rss(self, start: float, end: float) -> dict[str, int]:
        peaks: dict[str, int] = {}
        for s in self.samples:
            if start <= s.at <= end:
                for n, v in s.rss.items():
                    peaks[n] = max(peaks.get(n, 0), v)
        return peaks
