"""What a failure of the cluster under a computation means, said as one sentence: workers that ran out of
memory, workers that kept dying, a lost scheduler.

distributed reports these as what broke at its own level (KilledWorker after a task's workers died
`allowed-failures` + 1 times, CommClosedError when a worker vanished mid-message, OSError and
CancelledError when the scheduler went), none of which says why. The cause is on the scheduler: a nanny
that restarts its worker for passing the memory terminate threshold logs a "worker-restart-memory"
event there (distributed/worker_memory.py, NannyMemoryManager.memory_monitor), whatever the kind of
cluster. explain() reads those events and turns the failure into a ClusterError that says what happened,
what the workers had and what to change.
It also sets how the cluster libraries log under the job's CLIs (quiet_cluster_logs).
May use: job.errors, data_prep.redact (and distributed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from dask.utils import key_split
from distributed import CancelledError
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker, NoValidWorkerError, NoWorkerError

from job.errors import ClusterError

MEMORY_RESTART_EVENT = "worker-restart-memory"
# What distributed raises when the scheduler disappears under a running computation.
LOST_SCHEDULER_ERRORS = (OSError, asyncio.CancelledError, CancelledError, CommClosedError)
# What it raises when no worker is left to run a task (a LocalCluster's scheduler, after
# job.deploy.local.NO_WORKERS_TIMEOUT).
NO_WORKER_ERRORS = (NoWorkerError, NoValidWorkerError)
# What it raises when workers vanish under a computation while the scheduler stays.
LOST_WORKER_ERRORS = (KilledWorker, CommClosedError, MemoryError, TimeoutError, *NO_WORKER_ERRORS)
# The nanny's event reaches the scheduler on a batched stream, shortly after the worker is gone.
EVENT_WAIT_SECONDS = 2.0


def quiet_cluster_logs(debug: bool) -> None:
    """The cluster libraries' logs as the job's CLIs show them without --debug (with it, untouched):
    distributed's, bokeh's and tornado's INFO chatter off, distributed's lines one line each with secrets
    redacted, and the reports the job says better in one sentence dropped."""
    from data_prep.redact import RedactingFilter

    if debug:
        return
    for noisy in ("distributed", "bokeh", "tornado"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("asyncio").addFilter(_not_an_interrupted_gather)
    for handler in logging.getLogger("distributed").handlers:  # distributed configures its own
        handler.addFilter(_without_traceback)
        handler.addFilter(_not_a_dead_worker_report)
        handler.addFilter(RedactingFilter())
    # dask-ml logs "Starting X" and "Finished X in T" for every step; the second says it all.
    logging.getLogger("dask_ml").addFilter(lambda record: not str(record.msg).startswith("Starting"))


def _not_an_interrupted_gather(record: logging.LogRecord) -> bool:
    """False for asyncio's "Task exception was never retrieved" about distributed's AllExit.

    When Ctrl-C interrupts `Client.gather`, distributed leaves its internal wait() tasks failed with
    AllExit and asyncio logs each one with a traceback (distributed/client.py, Client._gather), after our
    clean shutdown. They say nothing the user needs.
    """
    exc = record.exc_info[1] if record.exc_info else None
    return type(exc).__name__ != "AllExit"


def _without_traceback(record: logging.LogRecord) -> bool:
    """distributed's own log lines, one line each: drop the traceback and the empty "ERROR -" records it
    writes when, say, it fails to reconnect to a lost scheduler (the CLI says what happened)."""
    if record.exc_info and not record.getMessage().strip():
        return False
    record.exc_info, record.exc_text = None, None
    return True


def _not_a_dead_worker_report(record: logging.LogRecord) -> bool:
    """False for the scheduler's ERROR lines about workers that died under a computation ("broadcast to
    tcp://... failed: CommClosedError", "Task ... marked as failed because 4 workers died", "... because
    it timed out waiting without any running workers"): the job then says in one sentence why they died
    (job.deploy.faults)."""
    message = record.getMessage()
    return not (
        (message.startswith("broadcast to ") and "CommClosedError" in message)
        or ("marked as failed because" in message and ("workers died" in message or "waiting" in message))
    )


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"


@dataclass(frozen=True)
class Watch:
    """What explain() compares with: when the computations began, and the workers' memory limits then
    (a worker being restarted is missing from the scheduler's list at the moment of the failure)."""

    since: float
    memory_limits: frozenset[int]

    @classmethod
    def start(cls, client) -> Watch:
        return cls(time.time(), frozenset(_worker_memory_limits(client)))


def memory_restarts(client, since: float) -> list[dict]:
    """The nannies' memory restarts logged on the scheduler after `since` (time.time())."""
    try:
        events = client.get_events(MEMORY_RESTART_EVENT)
    except Exception:  # noqa: BLE001 (the scheduler itself is gone: nothing to read)
        return []
    return [event for stamp, event in events if stamp >= since and isinstance(event, dict)]


def _worker_memory_limits(client) -> set[int]:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return {int(w["memory_limit"]) for w in workers if w.get("memory_limit")}


def _out_of_memory(restarts: list[dict], limits: frozenset[int], what: str, resume_hint: str) -> ClusterError:
    largest = max(int(event.get("rss") or 0) for event in restarts)
    each = f"{' or '.join(_mib(limit) for limit in sorted(limits))} each" if limits else "their memory limit"
    return ClusterError(
        f"the workers ran out of memory {what}: their nannies restarted them {len(restarts)} time(s) for "
        f"using "
        f"more than 95% of {each} (up to {_mib(largest)}); give each worker more memory (--memory-limit, or "
        "fewer workers with more each: --n-workers), or let X stream from the store (--persist never)"
        + resume_hint
    )


def explain(client, exc: BaseException, watch: Watch, resume_hint: str = "") -> ClusterError | None:
    """The ClusterError that says what `exc` (raised by a computation on `client` watched since
    `watch` began) means, or None when it is not a cluster fault. `resume_hint`: what to add when the run can
    be resumed (e.g. "; the checkpoint in ... lets --resume ... continue")."""
    if client.status != "running":
        if isinstance(exc, LOST_SCHEDULER_ERRORS):
            return ClusterError(
                f"lost the scheduler {client.scheduler.address} ({type(exc).__name__}){resume_hint}"
            )
        return None
    if not isinstance(exc, LOST_WORKER_ERRORS):
        return None
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    restarts = memory_restarts(client, watch.since)
    while not restarts and time.monotonic() < deadline:
        time.sleep(0.2)
        restarts = memory_restarts(client, watch.since)
    task = (
        f"while running {key_split(exc.task)}"
        if isinstance(exc, (KilledWorker, *NO_WORKER_ERRORS))
        else "during the computation"
    )
    if restarts:
        return _out_of_memory(restarts, watch.memory_limits, task, resume_hint)
    if isinstance(exc, MemoryError):
        return ClusterError(
            f"a worker ran out of memory {task} (MemoryError: {exc}); give each worker more memory "
            f"(--memory-limit) or let X stream from the store (--persist never){resume_hint}"
        )
    if isinstance(exc, NO_WORKER_ERRORS):
        return ClusterError(
            f"no worker was left {task} for {exc.timeout:.0f} s (their nannies did not bring them back); "
            f"their logs say why{resume_hint}"
        )
    if isinstance(exc, KilledWorker):
        return ClusterError(
            f"the workers died {exc.allowed_failures + 1} times {task} (the last was "
            f"{exc.last_worker.address}), not for lack of memory that their nannies saw; their "
            f"logs say why{resume_hint}"
        )
    return ClusterError(
        f"lost a worker {task} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); its "
        f"log says why{resume_hint}"
    )
