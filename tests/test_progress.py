"""What the terminal shows: names as inert text, binary units and plurals, bar and line alike."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from shoal.errors import inert
from shoal.hub.client import SearchResult
from shoal.progress import Progress, SpeedColumn, count, human_size, results_table

MiB = 1024 * 1024
# A stranger's torrent name: rich markup, a terminal escape that turns text red, a newline.
HOSTILE = "evil[/x] [bold]\x1b[31mred\nline"
SHOWN = "evil[/x] [bold]\\x1b[31mred\\nline"


class FakeTask:
    """The little of a TorrentTask that Progress reads."""

    def __init__(self, done: int, total: int, peers: int, problem: str | None = None) -> None:
        self.done, self.total = done, total
        self.connections = dict.fromkeys(range(peers))
        self.problem = problem

    def progress(self) -> tuple[int, int]:
        """Verified bytes and total bytes."""
        return self.done, self.total

    def tracker_problem(self) -> str | None:
        """The trackers' error, as the node reports it."""
        return self.problem


def show(task: FakeTask, name: str, console: Console) -> None:
    """Open a Progress and close it, which draws its final state once."""

    async def main() -> None:
        with Progress(task, name, console=console):  # type: ignore[arg-type]
            pass

    asyncio.run(main())


def terminal() -> tuple[Console, io.StringIO]:
    """A console that takes itself for a terminal, wide and colourless (no SGR codes of its own)."""
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system=None, width=200), out


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name.bin", "plain name.bin"),
        ("évé 日本", "évé 日本"),
        (HOSTILE, SHOWN),
        ("\r\t\x00\x7f\x9b", "\\r\\t\\x00\\x7f\\x9b"),
        ("rtl\u202eexe.txt", "rtl\\u202eexe.txt"),
        ("bad utf-8 \udcff", "bad utf-8 \\udcff"),
    ],
)
def test_inert_escapes_what_could_drive_a_terminal(text: str, shown: str) -> None:
    assert inert(text) == shown
    assert inert(text).isprintable()


def test_the_bar_shows_a_hostile_name_as_text() -> None:
    console, out = terminal()
    show(FakeTask(3 * MiB, 16 * MiB, 1), HOSTILE, console)
    drawn = out.getvalue()
    assert SHOWN in drawn
    assert "\x1b[31m" not in drawn and "\nline" not in drawn


def test_the_bar_shows_the_trackers_error_as_text() -> None:
    console, out = terminal()
    show(FakeTask(0, 16 * MiB, 0, problem="[/]denied\x1b]0;title\x07"), "n", console)
    drawn = out.getvalue()
    assert "(trackers: [/]denied\\x1b]0;title\\x07)" in drawn
    assert "\x1b]0;" not in drawn


@pytest.mark.parametrize(("peers", "shown"), [(0, "0 peers"), (1, "1 peer "), (2, "2 peers")])
def test_the_bar_counts_in_binary_units_and_plurals(peers: int, shown: str) -> None:
    console, out = terminal()
    show(FakeTask(3 * MiB, 16 * MiB, peers), "n", console)
    drawn = out.getvalue()
    assert "3.0/16.0 MiB" in drawn
    assert shown in drawn
    assert "MB" not in drawn


@pytest.mark.parametrize(("peers", "shown"), [(0, "0 peers"), (1, "1 peer,"), (2, "2 peers")])
def test_the_line_counts_in_binary_units_and_plurals(
    peers: int, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    show(FakeTask(4 * MiB, 16 * MiB, peers), HOSTILE, Console(file=io.StringIO()))
    line = capsys.readouterr().err
    assert line.startswith(f"{SHOWN}: 25.0% of 16.0 MiB, ")
    assert "B/s" in line and "MB" not in line
    assert shown in line
    assert line.count("\n") == 1


def test_the_speed_column_is_binary() -> None:
    column = SpeedColumn()
    rendered: list[str] = []
    for speed in (None, 512.0, 3 * MiB + 1):
        task: Any = SimpleNamespace(finished_speed=None, speed=speed)
        rendered.append(column.render(task).plain)
    assert rendered == ["?", "512 B/s", "3.0 MiB/s"]


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (5 * MiB, "5.0 MiB"), (3 << 30, "3.0 GiB")],
)
def test_human_size(size: int, shown: str) -> None:
    assert human_size(size) == shown


def test_count() -> None:
    assert [count(n, "peer") for n in (0, 1, 2)] == ["0 peers", "1 peer", "2 peers"]


def test_search_results_show_hostile_names_as_text() -> None:
    result = SearchResult(bytes(20), HOSTILE, 5 * MiB, 1, 1, 0, 1)
    out = io.StringIO()
    Console(file=out, width=200).print(results_table([result]))
    table = out.getvalue()
    assert "\x1b" not in table
    assert SHOWN in table and "5.0 MiB" in table


def test_a_finished_download_says_complete_rather_than_no_peers(capsys) -> None:
    show(FakeTask(16 * MiB, 16 * MiB, 0), "n", Console(file=io.StringIO()))
    line = capsys.readouterr().err
    assert "100.0% of 16.0 MiB" in line and "complete" in line and "0 peers" not in line
