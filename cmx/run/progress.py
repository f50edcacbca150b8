"""How a run reports itself: a rich progress bar for people, one line per epoch for logs, or nothing.

The trainer calls these hooks; none of them forces a device sync (loss/accuracy shown on the bar are
the values the trainer already read at its periodic check).
"""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Silent reporter; the base for the others."""

    def message(self, text: str) -> None:
        pass

    def start(self, run_id: str, summary: str, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        pass

    def step(self, n: int = 1, **fields) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def stop(self) -> None:
        pass


class LineReporter(Reporter):
    """One line per epoch on stderr: for logs, SLURM output files and sweeps."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, run_id, summary, epochs, steps_per_epoch, first_epoch):
        self.epochs = epochs
        self.message(f"run {run_id}: {summary}, epochs {first_epoch + 1}-{epochs}")

    def epoch(self, row):
        test = f" test_acc {row['test_acc']:.2f}" if row.get("test_acc") is not None else ""
        self.message(f"epoch {row['epoch']}/{self.epochs} lr {row['lr']:.5f} loss {row['train_loss']:.4f} "
                     f"train_acc {row['train_acc']:.2f}{test} {row['seconds']:.1f}s {row['img_per_s']:.0f} img/s")


class BarReporter(LineReporter):
    """A rich progress bar: epoch, loss, accuracy, img/s and ETA; epoch lines printed above it."""

    def __init__(self):
        self.console = Console(stderr=True)
        super().__init__(self.console.file)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[ips]} img/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True,
        )

    def message(self, text):
        self.console.print(text, highlight=False)

    def start(self, run_id, summary, epochs, steps_per_epoch, first_epoch):
        super().start(run_id, summary, epochs, steps_per_epoch, first_epoch)
        self.progress.start()
        self.task = self.progress.add_task("train", total=epochs * steps_per_epoch,
                                           completed=first_epoch * steps_per_epoch,
                                           epoch=f"{first_epoch + 1}/{epochs}", loss="-", acc="-", ips="-")
        self.t0, self.done0 = time.perf_counter(), 0

    def step(self, n=1, **fields):
        self.progress.update(self.task, advance=n, **{k: v for k, v in fields.items() if v is not None})

    def epoch(self, row):
        super().epoch(row)
        nxt = min(row["epoch"] + 1, self.epochs)
        self.progress.update(self.task, epoch=f"{nxt}/{self.epochs}", loss=f"{row['train_loss']:.3f}",
                             acc=f"{row['train_acc']:.1f}%", ips=f"{row['img_per_s']:.0f}")

    def stop(self):
        self.progress.stop()


def make_reporter(mode: str) -> Reporter:
    """'bar' on a terminal, 'lines' for logs (--quiet), 'none' for tests."""
    if mode == "bar" and not sys.stderr.isatty():
        mode = "lines"
    return {"bar": BarReporter, "lines": LineReporter, "none": Reporter}[mode]()
