"""Logging set-up shared by the workflow's scripts.

Entry point: :func:`log_to`.
"""

from __future__ import annotations

import logging
import os
import sys


def log_to(path: str) -> None:
    """Send this process's logging and stderr (tracebacks, tqdm bars) to ``path``, appending.

    Logging goes at level INFO with time, level and logger name. In a log file a progress bar is redrawn
    at most every 30 s (``TQDM_MININTERVAL``, read by tqdm), not hundreds of times a second; a user's own
    setting wins.

    Parameters
    ----------
    path : str
        The log file (a rule's ``log``); opened for appending, line-buffered, for the life of the process.
    """
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
