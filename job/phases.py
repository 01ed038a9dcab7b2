"""Announce each phase of the job, time it, and record peak memory of the client and of the cluster.

May use: psutil and distributed only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


class _PeakRss:
    """Samples this process's RSS in a background thread; `peak` is the largest value seen."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        process = psutil.Process()
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)


@dataclass
class PhaseRecorder:
    """Use `with recorder.phase("fit"):` around each step; read `seconds` and `memory` afterwards.

    Cluster memory is distributed's MemorySampler (sum of the workers' process memory, sampled by the
    scheduler); client memory is this process's RSS.
    """

    client: Client | None = None
    on_change: Callable[[str | None], object] | None = None  # called with the running phase (None: none runs)
    seconds: dict[str, float] = field(default_factory=dict)
    memory: dict[str, dict[str, int]] = field(default_factory=dict)
    total: int | None = None
    current: str | None = None  # the running phase
    detail: str | None = None  # how far it is (the fit's latest Lloyd iteration), for the live page
    _noted: float = 0.0

    def note(self, detail: str, every: float = 1.0) -> None:
        """Say how far the running phase is; on_change hears of it at most once every `every` s."""
        self.detail = detail
        now = time.perf_counter()
        if now - self._noted >= every:
            self._noted = now
            self._notify(self.current)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        number = len(self.seconds) + 1
        suffix = f"/{self.total}" if self.total else ""
        log.info("[%d%s] %s ...", number, suffix, name)
        self.current, self.detail = name, None
        self._notify(name)
        started = time.perf_counter()
        sampler = None
        with _PeakRss() as rss:
            if self.client is not None:
                from distributed.diagnostics import MemorySampler

                sampler = MemorySampler()
                sampling = sampler.sample(name, client=self.client, measure="process", interval=0.1)
                sampling.__enter__()
                try:
                    yield
                finally:
                    try:
                        sampling.__exit__(None, None, None)
                    except Exception as exc:  # noqa: BLE001 (e.g. the scheduler is gone: keep the phase's own error)
                        log.debug("memory sampling of %s failed: %s", name, exc)
            else:
                yield
        elapsed = time.perf_counter() - started
        self.seconds[name] = elapsed
        record = {"client_peak_rss": int(rss.peak)}
        if sampler is not None and sampler.samples.get(name):
            record["cluster_peak_memory"] = int(max(v for _, v in sampler.samples[name]))
        self.memory[name] = record
        log.info("[%d%s] %s done in %.2f s", number, suffix, name, elapsed)
        self.current, self.detail = None, None
        self._notify(None)

    def _notify(self, current: str | None) -> None:
        if self.on_change is not None:
            try:
                self.on_change(current)
            except OSError as exc:  # a progress page must never stop the job
                log.debug("progress page not updated: %s", exc)


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM on Linux).

    Not resource.getrusage: on Linux a forked-and-exec'ed process's ru_maxrss starts from its parent's
    (a scheduler started by a large client looked as large as its client)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_memory_per_process(client) -> dict:
    """Peak resident memory of every process of the run: this client, the scheduler, each worker."""
    peaks: dict[str, object] = {"client": peak_rss()}
    try:
        peaks["scheduler"] = client.run_on_scheduler(peak_rss)
        peaks["workers"] = dict(sorted(client.run(peak_rss).items()))
    except Exception as exc:  # noqa: BLE001 (a scheduler we lost: record what we have)
        log.debug("peak memory of the cluster's processes not read: %s", exc)
    return peaks
