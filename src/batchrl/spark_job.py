"""A standalone Spark application: one Spark stage per run, described by one JSON argument.

    spark-submit .../batchrl/spark_job.py '{"stage": "timeline", "input": URI, "output": URI, "options": {...}}'
    python -m batchrl.spark_job '<the same JSON>'

``options`` holds the stage's options (for timeline: TimelineOptions keys, camelCase or snake_case).
An optional ``"spark_master"`` picks the master; without it the master is the one ``spark-submit``
configured (e.g. a SparkApplication's driver on Kubernetes), or ``local[*]`` when run with plain
``python``. Prints the stage's summary as JSON on stdout; a user error prints its message on stderr
and exits 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from batchrl.errors import BatchRLError
from batchrl.results import StageResult

log = logging.getLogger("batchrl.spark_job")


def _timeline(payload: dict[str, Any], master: str | None) -> StageResult:
    from batchrl.data.timeline import make_options, resolve_locations, timeline

    options = make_options(payload.get("options") or {}, where="spark_job options")
    input, output = resolve_locations(payload.get("input"), payload.get("output"), options)
    return timeline(input, output, options, spark_master=master, engine="spark")


def _normalize(payload: dict[str, Any], master: str | None) -> StageResult:
    from batchrl.data.normalize import make_options, normalize

    options = make_options(payload.get("options") or {}, where="spark_job options")
    return normalize(_uri(payload, "input"), _uri(payload, "output"), options, spark_master=master,
                     engine="spark")


def _prepare(payload: dict[str, Any], master: str | None) -> StageResult:
    """``input``: {"timeline": URI, "normalization": URI, "action_normalization": URI (continuous actions)};
    ``output``: {"train": URI, "eval": URI}."""
    from batchrl.data.prepare import make_options, prepare

    options = make_options(payload.get("options") or {}, where="spark_job options")
    inputs = payload.get("input")
    action_normalization = inputs.get("action_normalization") if isinstance(inputs, dict) else None
    return prepare(_uri(payload, "input", "timeline"), _uri(payload, "input", "normalization"),
                   _uri(payload, "output", "train"), _uri(payload, "output", "eval"), options, spark_master=master,
                   action_normalization=action_normalization or None, engine="spark")


def _uri(payload: dict[str, Any], key: str, part: str | None = None) -> str:
    value = payload.get(key)
    if part is not None:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        name = f"{key}.{part}" if part else key
        raise BatchRLError(f"the job argument has no {name} URI",
                           fix=f'set "{key}": ' + (f'{{"{part}": URI, ...}}' if part else "URI"))
    return value


#: Stage name -> function(payload, spark master) -> the stage's result.
STAGES: dict[str, Callable[[dict[str, Any], str | None], StageResult]] = {
    "timeline": _timeline,
    "normalize": _normalize,
    "prepare": _prepare,
}
PAYLOAD_KEYS = {"stage", "input", "output", "options", "spark_master"}


def _under_spark_submit() -> bool:
    """True when this Python driver was started by spark-submit (its JVM gateway is already up)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def parse_payload(text: str) -> dict[str, Any]:
    """Parse and check the JSON argument."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BatchRLError(f"the job argument is not valid JSON: {exc.msg} at column {exc.colno}",
                           fix='pass one JSON object, e.g. \'{"stage": "timeline", "input": ..., ...}\'') from None
    if not isinstance(payload, dict):
        raise BatchRLError("the job argument must be a JSON object", fix="wrap the fields in {...}")
    unknown = sorted(set(payload) - PAYLOAD_KEYS)
    if unknown:
        raise BatchRLError(f"unknown key(s) in the job argument: {unknown}", fix=f"use {sorted(PAYLOAD_KEYS)}")
    if payload.get("stage") not in STAGES:
        raise BatchRLError(f"unknown stage {payload.get('stage')!r}", fix=f"use one of {sorted(STAGES)}")
    return payload


def run_job(payload: dict[str, Any]) -> StageResult:
    """Run the stage a parsed payload names; the master defaults as described in the module doc."""
    master = payload.get("spark_master")
    if master is None and not _under_spark_submit():
        master = "local[*]"
    return STAGES[payload["stage"]](payload, master)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if len(args) != 1:
        usage = "usage: spark_job.py '{\"stage\": ..., \"input\": ..., \"output\": ..., \"options\": {...}}'"
        print(usage, file=sys.stderr)  # noqa: T201
        return 2
    try:
        result = run_job(parse_payload(args[0]))
    except BatchRLError as exc:
        print(f"batchrl spark_job: error: {exc.message}", file=sys.stderr)  # noqa: T201
        return 2
    print(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
