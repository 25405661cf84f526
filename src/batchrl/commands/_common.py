"""Helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from batchrl.errors import BatchRLError
from batchrl.results import StageResult, require

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def build_options(options_type: type[OptionsT], where: str, **values: Any) -> OptionsT:
    """Validate CLI values into an options model; a bad value becomes a clear BatchRLError."""
    try:
        return options_type(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}" for err in exc.errors())
        raise BatchRLError(f"invalid options: {problems}", where=where, fix="see --help") from None


def print_summary(result: StageResult) -> None:
    """Print a stage's typed result (:meth:`~batchrl.results.StageResult.to_dict`) as JSON on stdout (what
    a script or KFP step reads); anything else is a TypeError."""
    print_json(require(result, "print_summary").to_dict())


def print_json(data: dict[str, Any]) -> None:
    """Print what a command that runs no stage reports (a submitted run, a launched application...) as JSON."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
