"""The dev-mode supervisor: one scheduler in-process, N local workers, kept alive.

When a worker process exits unexpectedly the supervisor tells the scheduler at once
(`ProcessExited`), so its sessions break within a second, then restarts it with the
same worker id after a short delay (longer if it keeps crashing, like kubelet's
CrashLoopBackOff).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from tether_operator.dev.console import event_line, header, notice_line, worker_line
from tether_operator.dev.embedded import DevError, EmbeddedScheduler, check_port_free
from tether_operator.dev.options import DevOptions
from tether_operator.dev.preflight import FileContents, check_file
from tether_operator.dev.workers import (
    WorkerSpec,
    describe_exit,
    kill_now,
    pump_lines,
    spawn,
    stop,
    worker_specs,
)
from tether_types.notices import Notice

RESTART_DELAY_SECONDS = 1.0
"""Delay before restarting a worker that exited."""

MAX_RESTART_DELAY_SECONDS = 30.0
"""Ceiling of the doubling delay for a worker that keeps crashing."""

HEALTHY_RUN_SECONDS = 10.0
"""A worker that ran this long before exiting restarts after the base delay again."""

FOLDED_NOTICES = frozenset({"SessionBroken"})
"""Notices the console does not print: the `WorkerLost` line already names the sessions.
(They still reach the log and, on Kubernetes, each run's Events.)"""


class DevSupervisor:
    """Runs the embedded scheduler and keeps the worker processes alive until stopped."""

    def __init__(self, options: DevOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.contents: FileContents | None = None
        """What the file defines, once `check_file` has imported it (shown in the header)."""
        self.scheduler = EmbeddedScheduler(
            options.host,
            options.port,
            console,
            db=options.db,
            metrics_port=options.metrics_port,
            log_format=options.log_format,
        )
        self.specs = worker_specs(
            Path(options.file).resolve(),
            options.workers,
            self.scheduler.url,
            options.slots,
            options.session_capacity,
            options.log_format,
        )
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._held: list[Notice] | None = None
        """Notices held back while a worker exit is reported (see `_report_exit`)."""
        self.exit_code = 0
        """1 when dev mode stopped because something failed rather than on request."""

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Start everything, supervise until Ctrl-C/SIGTERM, stop everything; exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._request_stop, signum)
        try:
            self.scheduler.on_notice(self._print_notice)
            try:
                await self.scheduler.start()
                if self.options.db:
                    self.console.print(
                        event_line(
                            f"history in {self.options.db}: "
                            f"{len(self.scheduler.recovered)} runs taken up again",
                            reason="Recovered",
                        )
                    )
                for spec in self.specs:
                    self.processes[spec.worker_id] = await spawn(spec)
                self.console.print(
                    header(
                        self.scheduler.url,
                        self.options.file
                        + (f" — {self.contents.summary()}" if self.contents else ""),
                        [(s, self.processes[s.worker_id].pid) for s in self.specs],
                        self.options.restart,
                        workflow=self._example_workflow(),
                    )
                )
                tasks = [
                    asyncio.create_task(self._supervise(spec), name=spec.worker_id)
                    for spec in self.specs
                ]
                tasks.append(asyncio.create_task(self._watch_scheduler()))
                await self._stopping.wait()
                await self._stop_workers()
                for task, outcome in zip(
                    tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True
                ):
                    if isinstance(outcome, BaseException):
                        self.exit_code = 1
                        self.console.print(
                            event_line(
                                f"{task.get_name()}: {outcome!r}", level="Warning", reason="Error"
                            )
                        )
            finally:
                await self._stop_workers()
                await self.scheduler.stop()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        self.console.print(event_line("workers and scheduler stopped", reason="Stopped"))
        return self.exit_code

    def _example_workflow(self) -> str:
        """A workflow of the file for the header's `tether run` hint."""
        if self.contents is not None and self.contents.workflows:
            return self.contents.workflows[0]
        return "WORKFLOW"

    def _request_stop(self, signum: int) -> None:
        if self._stopping.is_set():  # a second Ctrl-C: no more grace period
            self.console.print(event_line("killing workers now", reason="Stopping"))
            for process in self.processes.values():
                kill_now(process)
            return
        name = signal.Signals(signum).name
        self.console.print(event_line(f"{name}: stopping workers and scheduler", reason="Stopping"))
        self._stopping.set()

    async def _watch_scheduler(self) -> None:
        while not self._stopping.is_set():
            if self.scheduler.failed:
                self.console.print(
                    event_line(
                        "the scheduler stopped unexpectedly", level="Warning", reason="Failed"
                    )
                )
                self._stopping.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.5)

    async def _stop_workers(self) -> None:
        self._stopping.set()
        await asyncio.gather(*(stop(process) for process in self.processes.values()))

    # ------------------------------------------------------------------ one worker

    async def _supervise(self, spec: WorkerSpec) -> None:
        """Keep one worker alive; any unexpected failure here stops dev mode."""
        try:
            await self._keep_alive(spec)
        except Exception:
            self._stopping.set()
            raise

    async def _keep_alive(self, spec: WorkerSpec) -> None:
        """Stream a worker's output; on exit report it lost and restart it (same id)."""
        delay = RESTART_DELAY_SECONDS
        while True:
            process = self.processes[spec.worker_id]
            started = time.monotonic()
            code = await self._follow(spec, process)
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            delay = RESTART_DELAY_SECONDS if ran >= HEALTHY_RUN_SECONDS else delay
            then = f"restarting in {delay:g}s" if self.options.restart else "not restarting"
            self._report_exit(spec, process.pid, code, then)
            if not self.options.restart:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)
            self.processes[spec.worker_id] = process = await spawn(spec)
            if self._stopping.is_set():  # stop was requested while it started
                await stop(process)
                return
            self.console.print(
                event_line(
                    f"{spec.worker_id} restarted (pid {process.pid}, node {spec.node})",
                    reason="WorkerRestarted",
                )
            )

    async def _follow(self, spec: WorkerSpec, process: asyncio.subprocess.Process) -> int:
        """Forward the worker's output with its id as prefix; return its exit status."""

        def emit(stderr: bool) -> Callable[[str], None]:
            def print_line(line: str) -> None:
                self.console.print(worker_line(spec.worker_id, line, stderr=stderr))

            return print_line

        await asyncio.gather(
            pump_lines(process.stdout, emit(False)),
            pump_lines(process.stderr, emit(True)),
        )
        return await process.wait()

    def _report_exit(self, spec: WorkerSpec, pid: int, code: int, then: str) -> None:
        """Tell the in-process scheduler at once, so the worker's sessions break now.

        Prints one line for the lost worker: the engine's `WorkerLost` notice (what the
        loss broke and retried) with `then`, the restart plan; the notices that follow
        from it (sessions rebound, runs ended) come after.
        """
        self._held = []
        try:
            reported = self.scheduler.worker_lost(
                spec.worker_id, f"pid {pid} {describe_exit(code)}"
            )
        finally:
            held, self._held = self._held, None
        loss = next((n for n in held if n.reason == "WorkerLost"), None)
        if loss is not None:
            line = event_line(f"{loss.message}; {then}", level="Warning", reason=loss.reason)
        else:
            known = "already lost" if reported else "not registered yet"
            line = event_line(
                f"{spec.worker_id} (pid {pid}) {describe_exit(code)} — {known}; {then}",
                level="Warning",
                reason="WorkerExited",
            )
        self.console.print(line)
        for notice in held:
            if notice is not loss:
                self._print_notice(notice)

    def _print_notice(self, notice: Notice) -> None:
        if self._held is not None:
            self._held.append(notice)
            return
        if self._stopping.is_set():  # workers going away on purpose: not news
            return
        if notice.reason in FOLDED_NOTICES:
            return
        self.console.print(notice_line(notice))


def run_dev(options: DevOptions, console: Console | None = None) -> int:
    """`tether dev`: check the file, then run the supervisor until Ctrl-C; the exit code.

    The port is checked first (instant), then the file is imported once: a file that
    cannot run never starts a worker.
    """
    if not Path(options.file).is_file():
        raise DevError(f"workflow file {options.file!r} not found")
    check_port_free(options.host, options.port)
    supervisor = DevSupervisor(options, console or Console())
    supervisor.contents = check_file(supervisor.specs[0], options.file)
    return asyncio.run(supervisor.run())
