"""Live segmentation at the microscope: :func:`watch` a folder and segment each micrograph as the
acquisition software writes it.

One home per concept:

- :mod:`~tem_keras.live.arrivals` — when a file is complete (size and time settled, then read
  whole by the real reader), :class:`FolderWatcher`;
- :mod:`~tem_keras.live.ledger` — what was finished: the ledger ``watch_done.jsonl`` and the
  particle table that follows it (restarts continue where they stopped);
- :mod:`~tem_keras.live.summary` — ``summary.png``: count, mean size and size distribution
  against time;
- :mod:`~tem_keras.live.session` — :func:`watch`: the loop, the outputs, stopping with Ctrl-C.

The command line is ``tem-keras watch MODEL FOLDER -o OUT``.
"""

from .arrivals import Complete, FileState, FolderWatcher, Unreadable, file_state, read_all_frames
from .ledger import LEDGER_NAME, TABLE_NAME, Ledger, ParticleTable
from .session import SUMMARY_NAME, WatchReport, watch
from .summary import LiveSummary

__all__ = ["watch", "WatchReport", "FolderWatcher", "Complete", "Unreadable", "FileState",
           "file_state", "read_all_frames", "Ledger", "ParticleTable", "LiveSummary",
           "LEDGER_NAME", "TABLE_NAME", "SUMMARY_NAME"]
