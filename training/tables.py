"""Terminal tables in the paper's Table-1 layout, and progress bars, with rich."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from training.metrics import METRIC_NAMES, TOP_K


def metrics_table(title: str, rows: Sequence[tuple[str, Mapping[str, float]]], caption: str = "") -> Table:
    """One row per model: SLAcc, VLAcc, ReSLAcc, ReVLAcc at top-1/2/3, like the paper's Table 1."""
    table = Table(title=title, caption=caption or None, show_lines=False)
    table.add_column("Model", max_width=40, overflow="fold")
    for name in METRIC_NAMES:
        for k in TOP_K:
            table.add_column(f"{name}\n@{k}", justify="right", no_wrap=True, min_width=6)
    best = {key: max(m.get(key, float("-inf")) for _, m in rows) for key in _keys()}
    for model, metrics in rows:
        cells = []
        for key in _keys():
            value = metrics.get(key)
            text = "—" if value is None else f"{value:.2f}"
            cells.append(f"[bold]{text}[/bold]" if value is not None and value == best[key] else text)
        table.add_row(model, *cells)
    return table


def _keys() -> list[str]:
    return [f"{name}@{k}" for name in METRIC_NAMES for k in TOP_K]


@contextmanager
def progress_bar(description: str, total: int, console: Console) -> Iterator[Callable[[int], None]]:
    """A progress bar on ``console``; yields ``update(done)``."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.update(task, completed=done)
