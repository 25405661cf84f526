"""The project's own error: what went wrong, where, and how to fix it.

Errors a user can cause (bad data, bad config, missing credentials) raise ``BatchRLError``; the CLI
prints its message without a traceback and exits with status 2.
"""

from __future__ import annotations


class BatchRLError(Exception):
    """A user-facing error with what happened, where, and how to fix it."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = self.what
        if self.where:
            text += f"\n  where: {self.where}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text
