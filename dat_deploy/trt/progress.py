"""A rich progress display fed by TensorRT's IProgressMonitor (big variants build for minutes)."""

from __future__ import annotations

from types import ModuleType


class _Spinner:
    """What older TensorRT versions (no IProgressMonitor) get: a spinner with the elapsed time."""

    def __init__(self, console) -> None:
        self._status = console.status("building the TensorRT engine (minutes for the big variants)")
        self._status.start()

    def close(self) -> None:
        self._status.stop()


def make_progress_monitor(trt: ModuleType, console=None):
    """An `IProgressMonitor` (TensorRT >= 10) that shows one bar per build phase."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    if not hasattr(trt, "IProgressMonitor"):
        return _Spinner(console or Console(stderr=True))

    class RichProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console or Console(stderr=True),
                transient=True,
            )
            self._tasks: dict[str, int] = {}
            self._depth: dict[str, int] = {}
            self._progress.start()

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self._depth[phase_name] = depth
            self._tasks[phase_name] = self._progress.add_task("  " * depth + phase_name, total=max(num_steps, 1))

        def step_complete(self, phase_name, step):
            task = self._tasks.get(phase_name)
            if task is not None:
                self._progress.update(task, completed=step + 1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            task = self._tasks.pop(phase_name, None)
            if task is not None:
                self._progress.remove_task(task)

        def close(self) -> None:
            self._progress.stop()

    return RichProgressMonitor()
