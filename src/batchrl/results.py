"""Typed stage results: what a stage function returns, as a frozen dataclass instead of a dict read by
string key.

A result names, beside its fields, which of them go into the KFP artifact's metadata (:attr:`METADATA`,
what the KFP UI shows; ``batchrl.kfp.runtime.record``) and into ``batchrl run``'s one-line stage summary
(:attr:`HEADLINE`). Both are read with ``getattr``, and ``tests/test_results.py`` checks that every
name is a field (or a property) of every result, so a renamed field fails a test instead of making
metadata vanish; code reads the fields as attributes, which mypy checks.

:meth:`StageResult.to_dict` is the one serialization: what the CLI prints, what ``run_summary.json``
holds and what the stages commit as their outputs' metadata. It is ``dataclasses.asdict`` (nested results
become dicts) with two kinds of field left out, so the JSON keeps the keys the dict results had:

- :func:`when_set` fields are left out while ``None`` (a key the stage used to add only when it had
  a value, e.g. what a SparkApplication run cannot report back);
- :func:`not_printed` fields are never serialized: facts the KFP metadata needs that the stage's
  printed summary never held (they are in the stage's own output files).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

_SERIALIZE = "batchrl.serialize"
ResultT = TypeVar("ResultT", bound="StageResult")


def when_set(default: Any = None) -> Any:
    """A field that :meth:`StageResult.to_dict` leaves out while it is ``None``."""
    return dataclasses.field(default=default, metadata={_SERIALIZE: "when_set"})


def not_printed() -> Any:
    """A field that :meth:`StageResult.to_dict` never writes (for the KFP metadata only)."""
    return dataclasses.field(metadata={_SERIALIZE: "never"})


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """Base of the stage results."""

    #: Fields copied into the KFP artifact's metadata (``None`` values are left out).
    METADATA: ClassVar[tuple[str, ...]] = ()
    #: Fields of ``batchrl run``'s one-line summary of the stage (``None`` values are left out).
    HEADLINE: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (what the CLI prints, ``run_summary.json`` holds and the stages commit)."""
        data = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            kind = f.metadata.get(_SERIALIZE)
            if kind == "never" or (kind == "when_set" and data[f.name] is None):
                del data[f.name]
        return data

    def metadata(self) -> dict[str, Any]:
        """The :attr:`METADATA` fields that have a value."""
        return {name: value for name in self.METADATA if (value := getattr(self, name)) is not None}

    def headline(self) -> dict[str, Any]:
        """The :attr:`HEADLINE` fields that have a value."""
        return {name: value for name in self.HEADLINE if (value := getattr(self, name)) is not None}

    @classmethod
    def from_dict(cls: type[ResultT], data: dict[str, Any], *, where: str = "", **values: Any) -> ResultT:
        """The result whose fields are in ``data`` (e.g. a stage's committed metadata, which holds more keys)
        or in ``values``; a field without a default missing from both is a BatchRLError about ``where``."""
        from batchrl.errors import BatchRLError

        fields = dataclasses.fields(cls)
        known = {**{k: v for k, v in data.items() if k in {f.name for f in fields}}, **values}
        missing = [f.name for f in fields if f.name not in known and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise BatchRLError(f"the stage's summary lacks {', '.join(missing)}", where=where or cls.__name__,
                               fix="rerun the stage with this batchrl version (its output's metadata is its summary)")
        return cls(**known)

    @classmethod
    def unknown_names(cls) -> list[str]:
        """Names in :attr:`METADATA` or :attr:`HEADLINE` that are neither fields nor properties (should be
        none)."""
        known = {f.name for f in dataclasses.fields(cls)}
        known |= {name for name in dir(cls) if isinstance(getattr(cls, name, None), property)}
        return [name for name in (*cls.METADATA, *cls.HEADLINE) if name not in known]


def require(result: object, where: str) -> StageResult:
    """``result`` itself when it is a :class:`StageResult`; else a TypeError (a stage that returned a dict)."""
    if not isinstance(result, StageResult):
        raise TypeError(f"{where} takes a typed stage result (batchrl.results.StageResult), "
                        f"not {type(result).__name__}")
    return result
