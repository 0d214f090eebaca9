"""What the terminal shows: a download's progress (a live bar, or a line every few seconds when
not on a terminal) and tables of search results."""

from __future__ import annotations

import asyncio
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.progress import Task as RichTask
from rich.table import Table
from rich.text import Text

from .errors import inert
from .node import TorrentTask

if TYPE_CHECKING:
    from .hub.client import SearchResult

LINE_INTERVAL = 5.0
BAR_INTERVAL = 0.25


def human_size(size: float) -> str:
    """Bytes in a binary unit a person reads easily."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def count(number: int, noun: str) -> str:
    """'1 peer', '2 peers'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class SpeedColumn(ProgressColumn):
    """The transfer rate in binary units, as every other size shoal shows."""

    def render(self, task: RichTask) -> Text:
        """KiB/s, MiB/s, or ? before the first sample."""
        speed = task.finished_speed or task.speed
        shown = "?" if speed is None else f"{human_size(speed)}/s"
        return Text(shown, style="progress.data.speed")


class Progress:
    """Reports one torrent task's progress until finished."""

    def __init__(self, task: TorrentTask, name: str, console: Console | None = None) -> None:
        self.task = task
        self.name = inert(name)
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self._runner: asyncio.Task[None] | None = None
        self._bar: RichProgress | None = None
        self._last = (time.monotonic(), 0)
        self._rate = 0.0

    def __enter__(self) -> Progress:
        if self.live:
            # No markup in the text columns: names and tracker errors are strangers' words.
            self._bar = RichProgress(
                TextColumn("{task.description}", style="bold", markup=False),
                BarColumn(),
                TaskProgressColumn(),
                DownloadColumn(binary_units=True),
                SpeedColumn(),
                TextColumn("{task.fields[peers]}{task.fields[note]}", markup=False),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._bar.start()
        self._runner = asyncio.ensure_future(self._run())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()

    def finish(self) -> None:
        """Show the final state and stop updating."""
        if self._runner is not None:
            self._runner.cancel()
            self._runner = None
            self._update()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _counts(self) -> tuple[int, int, int]:
        done, total = self.task.progress()
        return done, total, len(self.task.connections)

    async def _run(self) -> None:
        interval = BAR_INTERVAL if self.live else LINE_INTERVAL
        while True:
            await asyncio.sleep(interval)
            self._update()

    def _note(self, peers: int) -> str:
        """Why there are no peers, when every tracker failed: the user's only clue."""
        problem = self.task.tracker_problem() if not peers else None
        return f" (trackers: {inert(problem)})" if problem else ""

    def _update(self) -> None:
        done, total, connected = self._counts()
        note = self._note(connected)
        # Once complete, the peers are let go (two seeds have nothing to trade): say so,
        # rather than "0 peers" as if the download were stuck.
        peers = "complete" if total and done >= total else count(connected, "peer")
        now = time.monotonic()
        then, before = self._last
        if now > then:
            self._rate = (done - before) / (now - then)
        self._last = (now, done)
        if self._bar is not None:
            if not self._bar.task_ids:
                self._bar.add_task(self.name, total=total or None, peers=peers, note=note)
            task_id = self._bar.task_ids[0]
            self._bar.update(task_id, completed=done, total=total or None, peers=peers, note=note)
            return
        percent = 100.0 * done / total if total else 0.0
        eta = f", ETA {int((total - done) / self._rate)}s" if self._rate > 0 and total else ""
        size = human_size(total) if total else "a size not known yet"
        print(
            f"{self.name}: {percent:.1f}% of {size}, {human_size(self._rate)}/s,"
            f" {peers}{eta}{note}",
            file=sys.stderr,
            flush=True,
        )


def wide_console() -> Console:
    """A console for tables: on a terminal its width, when piped wide enough for a whole row."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def results_table(
    results: list[SearchResult], title: str | None = None, via: list[str] | None = None
) -> Table:
    """Search results as a table; the info-hash is never cut, since people copy it. via:
    which architectures found each result (a column of its own)."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("name", overflow="ellipsis", ratio=1, min_width=12)
    for column in ("size", "seeders", "leechers"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("info-hash", no_wrap=True, min_width=40)
    if via is not None:
        table.add_column("via", no_wrap=True)
    for index, result in enumerate(results):
        table.add_row(
            # Text, not markup: a name is a stranger's words and may contain "[/]" or escapes.
            Text(inert(result.name)),
            human_size(result.size),
            str(result.seeders),
            str(result.leechers),
            result.info_hash.hex(),
            *([via[index]] if via is not None else []),
        )
    return table
