"""Logging set-up shared by the workflow's scripts."""

from __future__ import annotations

import logging
import sys


def log_to(path: str) -> None:
    """Send this process's logging and stderr (tracebacks, tqdm bars) to ``path``, appending."""
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
