"""Progress for long work: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm


class Progress:
    """Count units of work toward ``total``; use as a context manager and call ``update(n)``."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", log_every_s: float = 10.0):
        self.desc, self.unit, self.total = desc, unit, total
        self.done = 0
        self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False) \
            if sys.stderr.isatty() else None
        self._log = logging.getLogger("batchrl.progress")
        self._every = log_every_s
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last >= self._every:
            self._last = time.monotonic()
            of = f"/{self.total}" if self.total else ""
            self._log.info("%s: %d%s %s", self.desc, self.done, of, self.unit)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
