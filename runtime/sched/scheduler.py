"""The scheduler: a real-time loop for capture and display, and inference workers in steps.

How it works:
- Periodic tasks (`every`) run at a fixed period. Real-time ones (audio capture, display
  refresh) run on the real-time loop, a thread of their own pinned away from inference; they
  must be short (copy samples, blit a frame). A tick that finishes later than its deadline
  (default: one period after it was due) is counted once in `late.<task>`; slots whose
  deadline passed before the loop got to them are skipped and counted in `skipped.<task>`
  (a frame missed its refresh either way: late + skipped are the deadline misses). While the
  threads run, the interpreter hands the GIL over every `RT_SWITCH_INTERVAL_S`: every numpy
  call or write in a tick releases the GIL, and each time the loop takes it back it waits up
  to the switch interval behind a worker running Python code (the default 5 ms, times the
  dozens of such calls in a render, made frames tens of milliseconds late). Non-real-time periodic tasks (a
  camera capture at the governor's rate, a memory check) are queued as jobs for the workers.
- Jobs (`submit`, or `post` to an event task registered with `on`) are iterators of steps: each
  `next()` does one unit of work (one LLM token, one ASR chunk, one OCR pass) and yields its
  cost in seconds, or None (then the cost is measured). A step that puts a result on screen
  appends (histogram, reference time) to `job.marks`; the latency is recorded at the step's
  end. Workers always run the most urgent
  ready job (highest priority, then earliest deadline, then oldest) for one step, then choose
  again, so a higher-priority job waits at most one step of a lower one. Workers may form pools
  (`workers=("asr", "llm")`, each pinned to its role's CPUs from the core plan): a job runs in
  its `pool`'s worker, so speech never waits for an LLM step at all. A job's deadline, if
  given, is checked when it finishes (`deadline_miss.<job>`).
- Errors: a step that raises is logged, traced and counted (`errors.<name>`); that job ends,
  the others keep running. A real-time task that raises is stopped (it would raise again at
  every tick) and its `on_error` callback is told; the loop keeps running the others.

Two drivers share this logic. `run_for(seconds)` is a discrete-event simulation on a
`VirtualClock`: the real-time loop and each worker are separate cores; steps run when they
start and occupy their worker for their cost, so tests are deterministic and never sleep (a
step's effects therefore appear at its start, not its end, in virtual time). `start()` /
`stop()` (or `run_realtime`) run the same tasks on real threads and a real clock.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from runtime.sched.clock import Clock, VirtualClock
from runtime.sched.cores import CorePlan, pin_thread
from runtime.sched.errors import SchedUsageError
from runtime.telemetry import Telemetry
from runtime.telemetry.energy import Meter

__all__ = ["RT_SWITCH_INTERVAL_S", "Job", "Priority", "Scheduler", "Task"]

log = logging.getLogger(__name__)

Step = float | None
#: the GIL switch interval while the threads run (the interpreter's default is 5 ms)
RT_SWITCH_INTERVAL_S = 1e-4


class Priority(IntEnum):
    """Higher runs first. Speech must keep up with the speaker; answers can wait a token."""

    BACKGROUND = 0
    LLM = 10
    VISION = 20
    ASR = 30
    VAD = 40


@dataclass
class Task:
    """A periodic task. `period_s` may be changed while running (the governor does)."""

    name: str
    period_s: float
    fn: Callable[[float], Step]
    realtime: bool
    priority: int
    deadline_s: float
    on_error: Callable[[BaseException], None] | None = None
    next_due: float = 0.0
    enabled: bool = True
    ticks: int = 0
    queued: bool = False
    phase_s: float = 0.0


@dataclass
class Job:
    """A unit of inference work, run one step at a time."""

    name: str
    steps: Iterator[Step]
    priority: int = Priority.LLM
    deadline: float | None = None
    cores: int = 1
    #: the worker pool to run in ("asr", "llm", ...); "any" runs wherever a worker is free
    pool: str = "any"
    on_done: Callable[[Job], None] | None = None
    ready_at: float = 0.0
    first_step_at: float | None = None
    done_at: float | None = None
    steps_done: int = 0
    error: BaseException | None = None
    seq: int = 0
    #: latencies to record when the current step ends: (histogram name, reference time)
    marks: list[tuple[str, float]] = field(default_factory=list)
    worst_wait_s: float = 0.0
    _waiting_since: float = 0.0

    def key(self) -> tuple[int, float, int]:
        deadline = self.deadline if self.deadline is not None else float("inf")
        return (-self.priority, deadline, self.seq)


@dataclass
class _Worker:
    index: int
    cpus: tuple[int, ...]
    pool: str = "any"
    job: Job | None = None
    free_at: float = 0.0
    step_start: float = 0.0
    step_cost: float = 0.0
    busy_s: float = field(default=0.0)


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        telemetry: Telemetry,
        workers: int | Sequence[str] = 1,
        plan: CorePlan | None = None,
        meter: Meter | None = None,
        switch_interval_s: float | None = RT_SWITCH_INTERVAL_S,
    ) -> None:
        pools = ["any"] * workers if isinstance(workers, int) else list(workers)
        if not pools:
            raise SchedUsageError(f"the scheduler needs at least one worker, got {workers}")
        self.clock = clock
        self.telemetry = telemetry
        self.metrics = telemetry.metrics
        self.trace = telemetry.trace
        self.plan = plan
        self.meter = meter
        self.tasks: dict[str, Task] = {}
        self._events: dict[str, tuple[Callable[[Any], Iterable[Step] | None], int, int]] = {}
        self._queue: list[tuple[tuple[int, float, int], Job]] = []
        self._seq = itertools.count()
        self._workers = [
            _Worker(i, (plan.for_role(pool) if plan else ()), pool) for i, pool in enumerate(pools)
        ]
        self._pools = set(pools)
        self._rt_free_at = 0.0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.rt_busy_s = 0.0
        self.switch_interval_s = switch_interval_s
        self._saved_switch: float | None = None

    # -- declaring work ------------------------------------------------------------------

    def every(
        self,
        name: str,
        period_s: float,
        fn: Callable[[float], Step],
        *,
        realtime: bool = True,
        priority: int = Priority.BACKGROUND,
        deadline_s: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        phase_s: float = 0.0,
    ) -> Task:
        """Run `fn(now)` every `period_s`; a real-time fn may return its cost (virtual time)."""
        if period_s <= 0:
            raise SchedUsageError(f"task {name!r}: period must be > 0 s, got {period_s}")
        if name in self.tasks:
            raise SchedUsageError(f"task {name!r} is already declared")
        task = Task(
            name,
            period_s,
            fn,
            realtime,
            priority,
            period_s if deadline_s is None else deadline_s,
            on_error,
            next_due=self.clock.now() + phase_s,
            phase_s=phase_s,
        )
        self.tasks[name] = task
        return task

    def on(
        self,
        event: str,
        fn: Callable[[Any], Iterable[Step] | None],
        priority: int = Priority.LLM,
        cores: int = 1,
    ) -> None:
        """Register an event task: `post(event, payload)` runs `fn(payload)`'s steps as a job."""
        self._events[event] = (fn, priority, cores)

    def post(self, event: str, payload: Any = None, deadline: float | None = None) -> Job:
        if event not in self._events:
            raise SchedUsageError(f"no task handles event {event!r}; register it with on()")
        fn, priority, cores = self._events[event]

        def steps() -> Iterator[Step]:
            result = fn(payload)
            if result is not None:
                yield from result

        return self.submit(Job(event, steps(), priority, deadline, cores))

    def submit(self, job: Job) -> Job:
        now = self.clock.now()
        job.ready_at = job._waiting_since = now
        job.seq = next(self._seq)
        with self._cv:
            heapq.heappush(self._queue, (job.key(), job))
            self._cv.notify_all()
        return job

    @property
    def pending(self) -> int:
        return len(self._queue) + sum(w.job is not None for w in self._workers)

    # -- shared logic --------------------------------------------------------------------

    def _tick(self, task: Task, now: float) -> float:
        """Run one real-time tick due at `task.next_due`; returns its cost in seconds.

        The tick's output is out at its end: it is late if that is after its deadline (`due +
        deadline_s`), counted once in `late.<task>`. Slots whose deadline passed while this
        tick ran are never run (a stale frame is worth nothing): `skipped.<task>`. The time
        from due to done goes into the `tick_delay.<task>` histogram."""
        due = task.next_due
        t0 = time.perf_counter()
        try:
            declared = task.fn(now)
        except Exception as exc:
            self._task_failed(task, exc)
            return 0.0
        cost = declared if declared is not None else time.perf_counter() - t0
        finish = now + cost
        task.ticks += 1
        if finish > due + task.deadline_s:
            self.metrics.inc(f"late.{task.name}")
        self.metrics.inc(f"ticks.{task.name}")
        self.metrics.observe(f"tick_delay.{task.name}", finish - due)
        self.trace.complete(
            task.name, now, finish, "realtime", "realtime", due_ms=round((now - due) * 1e3, 3)
        )
        task.next_due = due + task.period_s
        missed = 0
        while task.next_due + task.deadline_s < finish:
            task.next_due += task.period_s
            missed += 1
        if missed:
            self.metrics.inc(f"skipped.{task.name}", missed)
        return cost

    def _task_failed(self, task: Task, exc: BaseException) -> None:
        task.enabled = False
        self.metrics.inc(f"errors.{task.name}")
        self.trace.instant("task stopped", "error", "realtime", task=task.name, error=str(exc))
        log.error("%s stopped: %s", task.name, exc)
        if task.on_error is not None:
            task.on_error(exc)

    def _queue_periodic(self, task: Task, now: float) -> None:
        due = task.next_due
        task.next_due = due + task.period_s
        while task.next_due <= now:
            task.next_due += task.period_s
            self.metrics.inc(f"skipped.{task.name}")
        if task.queued:  # the last run has not started yet: never queue a task twice
            self.metrics.inc(f"skipped.{task.name}")
            return
        task.ticks += 1
        task.queued = True

        def steps() -> Iterator[Step]:
            task.queued = False
            try:
                cost = task.fn(self.clock.now())
            except Exception as exc:
                self._task_failed(task, exc)
                return
            yield cost

        self.submit(Job(task.name, steps(), task.priority, due + task.deadline_s))

    def _eligible(self, job: Job, worker: _Worker) -> bool:
        """A job runs in its pool's worker; a job of a pool no worker has runs anywhere."""
        return worker.pool == "any" or job.pool == worker.pool or job.pool not in self._pools

    def _pop(self, worker: _Worker) -> Job | None:
        """The most urgent job this worker may run (the queue is short: a scan is cheap)."""
        with self._cv:
            best = None
            for i, (key, job) in enumerate(self._queue):
                if self._eligible(job, worker) and (best is None or key < self._queue[best][0]):
                    best = i
            if best is None:
                return None
            item = self._queue[best]
            self._queue[best] = self._queue[-1]
            self._queue.pop()
            heapq.heapify(self._queue)
            return item[1]

    def _step(self, worker: _Worker, job: Job, now: float) -> tuple[bool, float]:
        """Run one step of `job`; returns (finished, cost)."""
        wait = now - job._waiting_since
        job.worst_wait_s = max(job.worst_wait_s, wait)
        if job.first_step_at is None:
            job.first_step_at = now
            self.metrics.observe(f"wait.{job.name}", now - job.ready_at)
        t0 = time.perf_counter()
        try:
            declared = next(job.steps)
        except StopIteration:
            self._flush_marks(job, now)
            return True, 0.0
        except Exception as exc:
            job.marks.clear()
            job.error = exc
            self.metrics.inc(f"errors.{job.name}")
            self.trace.instant(
                "job failed", "error", f"worker {worker.index}", job=job.name, error=str(exc)
            )
            log.error("%s failed: %s", job.name, exc)
            return True, 0.0
        cost = declared if declared is not None else time.perf_counter() - t0
        self._flush_marks(job, now + cost)
        job.steps_done += 1
        worker.busy_s += cost
        self.trace.complete(
            job.name,
            now,
            now + cost,
            "inference",
            f"worker {worker.index}",
            cores=job.cores,
            step=job.steps_done,
        )
        if self.meter is not None:
            self.meter.add(now + cost, cost, job.cores)
        return False, cost

    def _flush_marks(self, job: Job, end: float) -> None:
        """A step's results are out when the step ends: latencies are measured to its end."""
        for name, t_ref in job.marks:
            self.metrics.observe(name, end - t_ref)
        job.marks.clear()

    def _finish(self, job: Job, now: float) -> None:
        job.done_at = now
        self.metrics.inc(f"jobs.{job.name}")
        if job.deadline is not None and now > job.deadline:
            self.metrics.inc(f"deadline_miss.{job.name}")
        if job.on_done is not None:
            job.on_done(job)

    def _requeue(self, job: Job, now: float) -> None:
        job._waiting_since = now
        with self._cv:
            heapq.heappush(self._queue, (job.key(), job))
            self._cv.notify_all()

    # -- virtual-time driver -------------------------------------------------------------

    def run_for(self, duration: float) -> None:
        """Simulate `duration` seconds on the VirtualClock (deterministic; no threads)."""
        clock = self.clock
        if not isinstance(clock, VirtualClock):
            raise SchedUsageError("run_for() needs a VirtualClock; use start()/stop() in real time")
        end = clock.now() + duration
        while True:
            self._dispatch_virtual(clock.now())
            live = [t for t in self.tasks.values() if t.enabled]
            rt_due = min((t.next_due for t in live if t.realtime), default=float("inf"))
            t_rt = max(rt_due, self._rt_free_at)
            t_nrt = min((t.next_due for t in live if not t.realtime), default=float("inf"))
            t_work = min(
                (w.free_at for w in self._workers if w.job is not None), default=float("inf")
            )
            t = min(t_rt, t_nrt, t_work)
            if t > end:
                clock.set(end)
                return
            clock.set(t)
            if t_work <= t:
                for w in self._workers:
                    if w.job is not None and w.free_at <= t:
                        job, w.job = w.job, None
                        self._requeue(job, t)
            if t_rt <= t or t_nrt <= t:
                self._run_due(t)

    def _run_due(self, now: float) -> None:
        for task in sorted(self.tasks.values(), key=lambda t: t.next_due):
            if not task.enabled or task.next_due > now:
                continue
            if task.realtime:
                if self._rt_free_at > now:
                    continue
                cost = self._tick(task, now)
                self.rt_busy_s += cost
                self._rt_free_at = now + cost
            else:
                self._queue_periodic(task, now)

    def _dispatch_virtual(self, now: float) -> None:
        for w in self._workers:
            while w.job is None:
                job = self._pop(w)
                if job is None:
                    break
                done, cost = self._step(w, job, now)
                if done:
                    self._finish(job, now)
                    continue
                w.job, w.free_at = job, now + cost

    # -- real-time driver ----------------------------------------------------------------

    def start(self) -> None:
        """Start the real-time loop and the workers on threads (pinned per the core plan)."""
        if self._threads:
            raise SchedUsageError("the scheduler is already running")
        self._stop.clear()
        if self.switch_interval_s is not None:
            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval_s)
        # what setup built (sessions, tokenizers, atlases) lives for the whole run: collect once
        # now, then keep it out of every later collection (a collection holds the GIL, so the
        # loop would wait for it)
        gc.collect()
        gc.freeze()
        now = self.clock.now()
        for task in self.tasks.values():  # time spent setting up (loading models) is not late
            task.next_due = now + task.phase_s
        rt = threading.Thread(target=self._rt_loop, name="ocula-realtime", daemon=True)
        self._threads.append(rt)
        for w in self._workers:
            th = threading.Thread(
                target=self._worker_loop, args=(w,), name=f"ocula-worker-{w.index}", daemon=True
            )
            self._threads.append(th)
        for th in self._threads:
            th.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads after their current step; jobs still queued are dropped."""
        self._stop.set()
        self.clock.wake()
        with self._cv:
            self._cv.notify_all()
        for th in self._threads:
            th.join(timeout)
        self._threads.clear()
        if self._saved_switch is not None:
            sys.setswitchinterval(self._saved_switch)
            self._saved_switch = None
        gc.unfreeze()

    def run_realtime(self, duration: float, until: Callable[[], bool] | None = None) -> None:
        """Run on real threads for `duration` seconds or until `until()` is true."""
        self.start()
        deadline = self.clock.now() + duration
        try:
            while self.clock.now() < deadline and not (until is not None and until()):
                self._stop.wait(min(0.05, max(0.0, deadline - self.clock.now())))
        finally:
            self.stop()

    def _rt_loop(self) -> None:
        if self.plan is not None:
            pin_thread(self.plan.realtime, "real-time loop")
        while not self._stop.is_set():
            enabled = [t for t in self.tasks.values() if t.enabled]
            if not enabled:
                self._stop.wait(0.05)
                continue
            t_next = min(t.next_due for t in enabled)
            if not self.clock.sleep_until(t_next) and self._stop.is_set():
                return
            now = self.clock.now()
            for task in sorted(enabled, key=lambda t: t.next_due):
                if task.next_due > now or not task.enabled:
                    continue
                if task.realtime:
                    self.rt_busy_s += self._tick(task, now)
                else:
                    self._queue_periodic(task, now)
                now = self.clock.now()

    def _worker_loop(self, w: _Worker) -> None:
        if self.plan is not None:
            pin_thread(w.cpus, f"worker {w.index}")
        while not self._stop.is_set():
            with self._cv:
                job = self._pop(w)
                while job is None and not self._stop.is_set():
                    self._cv.wait(0.1)
                    job = self._pop(w)
                if job is None:
                    return
            w.job = job
            done, _ = self._step(w, job, self.clock.now())
            w.job = None
            now = self.clock.now()
            if done:
                self._finish(job, now)
            else:
                self._requeue(job, now)
