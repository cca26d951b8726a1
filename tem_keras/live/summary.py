"""The summary figure of a watch: particle count, mean size and size distribution over time.

``OUT/summary.png`` shows, for every frame segmented so far, the number of particles and their
mean equivalent-disk diameter against the acquisition time (the file's modification time, from
the first file on), and the size distribution of all particles with its log-normal fit
(:func:`tem_keras.analysis.particles.plot_size_distribution`) beside that of the last frames. It is
redrawn at most every ``every`` seconds, between two looks at the folder (drawing takes a few
tenths of a second, and files that are ready are segmented first), and written
atomically (a new file renamed over the old one), so a viewer never opens half a PNG.

Sizes are in nm when the first frame has a pixel size, in pixels otherwise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

__all__ = ["LiveSummary", "SIZE_COLUMNS"]

#: size columns of the particle table: nm when calibrated, else px
SIZE_COLUMNS = ("equivalent_diameter_nm", "equivalent_diameter_px")


class LiveSummary:
    """Per-frame particle statistics of a watch and the figure drawn from them.

    Parameters
    ----------
    path : str or Path
        The PNG to write (``OUT/summary.png``).
    every : float
        Smallest number of seconds between two drawings by :meth:`refresh`.
    recent : int
        Frames whose sizes are drawn as "recent" in the distribution panel.
    """

    def __init__(self, path, *, every: float = 5.0, recent: int = 20):
        self.path = Path(path)
        self.every, self.recent = float(every), int(recent)
        self.times: list[float] = []     # acquisition time of each frame (s since the epoch)
        self.counts: list[int] = []
        self.means: list[float] = []
        self.sizes: list[np.ndarray] = []  # per frame; empty for frames restored from the ledger
        self.restored = np.zeros(0)        # sizes of the particles of earlier sessions
        self.column: str | None = None
        self._drawn = -np.inf
        self._stale = False

    def restore(self, done: list[dict], table_sizes: dict[str, np.ndarray]) -> None:
        """Start from the files of earlier sessions: ledger entries and the table's size columns."""
        for entry in done:
            self.column = self.column or entry.get("size_column")
            for _, count, mean in entry.get("frames", ()):
                self.times.append(entry["mtime_ns"] / 1e9)
                self.counts.append(int(count))
                self.means.append(np.nan if mean is None else float(mean))
                self.sizes.append(np.zeros(0))
        if self.column is not None and self.column in table_sizes:
            values = table_sizes[self.column]
            self.restored = values[np.isfinite(values)]
        self._stale = bool(self.counts) and not self.path.exists()

    def add(self, table, acquired: float) -> tuple[int, float]:
        """Add one frame's particle table (acquired at ``acquired``, s since the epoch); returns
        its ``(count, mean size)`` (NaN without particles)."""
        if self.column is None:
            nm = np.asarray(table[SIZE_COLUMNS[0]], dtype=float) if len(table) else np.zeros(0)
            calibrated = table.attrs.get("pixel_size_nm") is not None or np.isfinite(nm).any()
            self.column = SIZE_COLUMNS[0] if calibrated else SIZE_COLUMNS[1]
        values = np.asarray(table[self.column], dtype=float)
        values = values[np.isfinite(values)]
        mean = float(values.mean()) if values.size else float("nan")
        self.times.append(float(acquired))
        self.counts.append(int(len(table)))
        self.means.append(mean)
        self.sizes.append(values)
        self._stale = True
        return int(len(table)), mean

    @property
    def units(self) -> str:
        """``"nm"`` or ``"px"``."""
        return "px" if self.column == SIZE_COLUMNS[1] else "nm"

    def refresh(self, *, force: bool = False) -> bool:
        """Draw and write the figure if something was added and (unless ``force``) the last
        drawing is at least ``every`` seconds old; returns whether it was written."""
        now = time.monotonic()
        if not self._stale or (not force and now - self._drawn < self.every):
            return False
        self.write()
        self._drawn = time.monotonic()
        self._stale = False
        return True

    def write(self) -> Path:
        """Draw the figure and put it at :attr:`path` atomically."""
        import pandas as pd

        from ..analysis.particles import plot_size_distribution
        from ..io.figures import new_figure, save_figure

        fig, (ax_count, ax_mean, ax_sizes) = new_figure(1, 3, figsize=(13, 3.6))
        t = np.asarray(self.times, dtype=float)
        t = t - t.min() if t.size else t
        minutes = t.size and t.max() > 180
        t = t / 60 if minutes else t
        unit = "min" if minutes else "s"
        ax_count.plot(t, self.counts, ".-", ms=4, lw=0.8)
        ax_count.set(xlabel=f"time since the first file ({unit})", ylabel="particles per frame",
                     title=f"{len(self.counts)} frame(s), {sum(self.counts)} particles")
        ax_mean.plot(t, self.means, ".-", ms=4, lw=0.8, color="C1")
        ax_mean.set(xlabel=f"time since the first file ({unit})",
                    ylabel=f"mean diameter ({self.units})", title="mean equivalent-disk diameter")
        column = self.column or SIZE_COLUMNS[0]
        every = np.concatenate([self.restored, *self.sizes]) if self.sizes else self.restored
        plot_size_distribution(pd.DataFrame({column: every}), column, ax=ax_sizes)
        latest = [s for s in self.sizes[-self.recent:] if s.size]
        if latest and every.size:
            recent = np.concatenate(latest)
            ax_sizes.hist(recent, bins=np.histogram_bin_edges(every, "auto"), density=True,
                          histtype="step", color="C0", lw=1.5,
                          label=f"last {min(self.recent, len(self.sizes))} frame(s) (n = {recent.size})")
            ax_sizes.legend(fontsize=8)
        ax_sizes.set_title("size distribution")
        for ax in (ax_count, ax_mean):
            ax.grid(alpha=0.3)
        partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial.png")
        try:
            save_figure(fig, partial)
            os.replace(partial, self.path)
        except OSError:
            partial.unlink(missing_ok=True)  # nothing half-made is left behind
            raise
        return self.path
