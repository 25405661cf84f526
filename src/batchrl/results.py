"""Typed stage results: what a stage function returns, as a frozen dataclass instead of a dict read by
string key.

A result names, beside its fields, which of them go into the KFP artifact's metadata (:attr:`METADATA`,
what the KFP UI shows; ``batchrl.kfp.runtime.record``) and into ``batchrl run``'s one-line stage summary
(:attr:`HEADLINE`). Both are read with ``getattr``, and ``tests/test_results.py`` checks that every
name is a field, so a renamed field fails a test instead of making metadata vanish. The CLI prints
:meth:`StageResult.as_dict` (the same JSON as before the types).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class StageResult:
    """Base of the stage results."""

    #: Fields copied into the KFP artifact's metadata (``None`` values are left out).
    METADATA: ClassVar[tuple[str, ...]] = ()
    #: Fields of ``batchrl run``'s one-line summary of the stage.
    HEADLINE: ClassVar[tuple[str, ...]] = ()

    def as_dict(self) -> dict[str, Any]:
        """The result as plain data (what the CLI prints and ``run_summary.json`` holds)."""
        return dataclasses.asdict(self)

    def metadata(self) -> dict[str, Any]:
        """The :attr:`METADATA` fields that have a value."""
        return {name: value for name in self.METADATA if (value := getattr(self, name)) is not None}

    def headline(self) -> dict[str, Any]:
        """The :attr:`HEADLINE` fields that have a value."""
        return {name: value for name in self.HEADLINE if (value := getattr(self, name)) is not None}

    @classmethod
    def unknown_names(cls) -> list[str]:
        """Names in :attr:`METADATA` or :attr:`HEADLINE` that are not fields (should be none)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return [name for name in (*cls.METADATA, *cls.HEADLINE) if name not in fields]


def as_dict(summary: StageResult | dict[str, Any]) -> dict[str, Any]:
    """A stage's summary as a dict, whether the stage returns a typed result or (not yet converted) a dict."""
    return summary.as_dict() if isinstance(summary, StageResult) else summary
