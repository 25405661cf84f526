"""What every component does around its stage call, inside the container (or the kfp.local subprocess).

Components import this module inside their function bodies; it is part of the installed package, so
the compiled components carry no copy of it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from batchrl.errors import BatchRLError
from batchrl.results import StageResult, require

if TYPE_CHECKING:
    from batchrl.data.normalize import NormalizeResult
    from batchrl.evaluation.evaluate import EvaluateResult

    NormalizeResultT = TypeVar("NormalizeResultT", bound=NormalizeResult)

ResultT = TypeVar("ResultT")

log = logging.getLogger(__name__)


def setup(s3_endpoint: str = "") -> None:
    """Log lines to the step's log, and point S3 URIs at ``s3_endpoint`` (MinIO, SeaweedFS...) when given.

    Credentials are never parameters: they come from the Kubernetes secret the pipeline maps to
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("batchrl").setLevel(logging.INFO)
    for noisy in ("py4j", "urllib3", "botocore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint


def options(options_type: type[BaseModel], step: str, **values: Any) -> Any:
    """A stage's options from component parameters; ``None`` means "the stage's default"."""
    try:
        return options_type.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
                             for err in exc.errors())
        raise BatchRLError(f"invalid parameters: {problems}", where=f"{step} component",
                           fix="correct the pipeline or component parameters") from None


def start_spark(master: str, conf: dict[str, Any] | None, engine: str = "auto") -> None:
    """Start the step's Spark session with the pipeline's Spark settings when the step runs on Spark
    (``engine`` spark); the stage then reuses it. The default engine, DuckDB, needs nothing started."""
    from batchrl.engine import resolve
    from batchrl.spark import get_spark

    if resolve(engine, master) != "spark":
        return

    get_spark(master, conf={str(k): str(v) for k, v in (conf or {}).items()})


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON (string keys), which is what KFP artifact metadata holds."""
    return json.loads(json.dumps(value, default=str))


def record(artifact: Any, result: StageResult) -> None:
    """Copy a stage result's metadata fields (:meth:`batchrl.results.StageResult.metadata`) into the
    artifact's metadata (shown by the KFP UI); anything but a typed result is a TypeError."""
    result = require(result, "runtime.record")
    for key, value in result.metadata().items():
        artifact.metadata[key] = json_safe(value)
    log.info("summary: %s", json.dumps(json_safe(result.to_dict()), sort_keys=True))


def workflow_config(config: dict[str, Any], where: str, *, num_epochs: int | None = None,
                    algorithm: str | None = None, seed: int | None = None,
                    actions: list[str] | None = None) -> Any:
    """The validated workflow config with the pipeline's knobs applied (``None`` keeps the config's value).

    ``algorithm`` renames the config's single model key (``DiscreteDQN`` -> ``DiscreteCQL`` keeps the
    trainer parameters both accept; the old algorithm's own options are dropped, with a warning in the log,
    :func:`batchrl.config.workflow.switch_algorithm`). ``actions`` names
    discrete actions: continuous-action models (SAC, TD3) and parametric ones (ParametricDQN, whose actions are
    candidate items) take theirs from the table, as ``prepare`` does, so the pipeline's ``actions`` default
    does not reach them.
    """
    import copy

    from batchrl.config import CONTINUOUS_ALGORITHMS, PARAMETRIC_ALGORITHMS, parse_config
    from batchrl.config.workflow import switch_algorithm

    data = copy.deepcopy(config)
    if num_epochs is not None:
        data["num_epochs"] = num_epochs
    if seed is not None:
        data["seed"] = seed
    models = data.get("model")
    if (algorithm is not None or actions is not None) and not (isinstance(models, dict) and len(models) == 1):
        raise BatchRLError("the workflow config must name exactly one model, e.g. model: {DiscreteDQN: {...}}",
                           where=where, fix="start from configs/reagent/discrete_dqn_cartpole_offline.yaml")
    if algorithm is not None:
        assert isinstance(models, dict)  # one model, checked above
        ((old, body),) = models.items()
        body, dropped = switch_algorithm(body, old, algorithm) if isinstance(body, dict) else (body, [])
        if dropped:
            log.warning("%s: algorithm %s: %s's own options dropped: %s", where, algorithm, old, ", ".join(dropped))
        data["model"] = {algorithm: body}
    if actions is not None:
        ((name, body),) = data["model"].items()
        if name not in CONTINUOUS_ALGORITHMS + PARAMETRIC_ALGORITHMS:
            body.setdefault("trainer_param", {})["actions"] = [str(a) for a in actions]
    return parse_config(data, where=where)


def scalar_metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested summary as flat ``a_b_c`` names (what a KFP Metrics artifact shows)."""
    import math

    flat: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(scalar_metrics(value, name))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def log_metrics(metrics: Any, values: dict[str, Any]) -> None:
    """Log every finite number of ``values`` to a KFP ``Metrics`` artifact."""
    for name, value in sorted(scalar_metrics(values).items()):
        metrics.log_metric(name, value)


GATES = ("score", "cpe", "none")


@dataclass(frozen=True, kw_only=True)
class GateResult(StageResult):
    """The publish gate's verdict on an evaluation (:func:`gate`), recorded on the evaluation artifact."""

    gate: str
    score: float  # NaN: the gated number is missing or untrusted
    passed: bool

    METADATA: ClassVar[tuple[str, ...]] = ("gate", "score", "passed")


def gate(result: EvaluateResult, kind: str, bar: float | None) -> GateResult:
    """The gated number of an evaluation (``score``) and whether it reaches ``bar`` (``passed``; no bar: never
    passes).

    ``score``: the mean return of the gym rollouts; ``cpe``: the lower 95% bound of the normalized
    estimate the evaluate stage recommends (``cpe_recommended``: a sequential estimator for multi-step
    logs, a one-step one for one-step logs, and only one whose diagnostics raise no flag; 1.0 = as good
    as the logging policy); ``none``: never publish. Every refusal is logged with its reason.
    """
    import math

    if kind not in GATES:
        raise BatchRLError(f"unknown publish gate {kind!r}", where="evaluate component",
                           fix=f"use one of {', '.join(GATES)}")
    if kind == "none":
        return GateResult(gate=kind, score=float("nan"), passed=False)
    if kind == "score":
        value = (result.gym or {}).get("mean_return")
        missing = "no gym rollouts (give env)"
    else:
        recommended = result.cpe_recommended or {}
        name = recommended.get("estimator")
        estimate = result.cpe.get(name) or {} if name else {}
        value = estimate.get("normalized_ci_low")
        refusals = "; ".join(f"{k}: {v}" for k, v in (recommended.get("refusals") or {}).items())
        missing = (f"no trustworthy estimate ({recommended.get('reason', 'no CPE on an eval table')}"
                   f"{': ' + refusals if refusals else ''})")
        if name and (estimate.get("diagnostics") or {}).get("flags"):
            value, missing = None, f"{name} is flagged: {'; '.join(estimate.get('warnings', []))}"
    if value is None or not math.isfinite(float(value)):
        log.warning("publish gate %r: %s; the model is not published", kind, missing)
        return GateResult(gate=kind, score=float("nan"), passed=False)
    passed = bar is not None and float(value) >= bar
    if not passed:
        log.warning("publish gate %r: %s is below the bar %s; the model is not published", kind, value, bar)
    return GateResult(gate=kind, score=float(value), passed=passed)


SPARK_MODES = ("local", "kubernetes")


def object_uri(artifact: Any) -> str:
    """An artifact's object-store URI as Spark on Kubernetes reads it (KFP names MinIO ``minio://``)."""
    uri = str(artifact.uri)
    if uri.startswith("minio://"):
        return "s3://" + uri[len("minio://"):]
    return uri


def check_spark_mode(mode: str, step: str) -> bool:
    """Whether ``mode`` runs the step's Spark work as a SparkApplication (``kubernetes``)."""
    if mode not in SPARK_MODES:
        raise BatchRLError(f"unknown spark_mode {mode!r}", where=f"{step} component",
                           fix=f"use one of {', '.join(SPARK_MODES)}")
    return mode == "kubernetes"


@dataclass(frozen=True)
class Spark:
    """A data step's engine settings (the pipeline's ``spark_*`` and ``engine`` parameters)."""

    master: str = "local[*]"
    conf: dict[str, Any] | None = None
    mode: str = "local"
    engine: str = "auto"
    kubernetes: dict[str, Any] | None = None


def run_data_stage(step: str, spark: Spark, options: BaseModel, *, local: Callable[[], ResultT], inputs: Any,
                   outputs: Any, remote_summary: Callable[[Any], ResultT], job: str | None = None,
                   uses_spark: bool = True) -> ResultT:
    """Run a data stage where ``spark`` says: ``mode`` kubernetes (and ``uses_spark``): as a SparkApplication
    ``job`` (default ``step``) from ``inputs`` to ``outputs`` (object-store URIs), its result rebuilt by
    ``remote_summary(outputs)`` from what the application committed; else ``local()`` in this pod, after
    starting the step's Spark session when the engine is Spark and ``uses_spark``. Both give the same
    typed result(s)."""
    if check_spark_mode(spark.mode, step) and uses_spark:
        run_on_kubernetes(job or step, inputs, outputs, options, spark.kubernetes)
        return remote_summary(outputs)
    if uses_spark:
        start_spark(spark.master, spark.conf, spark.engine)
    return local()


def run_on_kubernetes(stage: str, input_uri: Any, output_uri: Any, options: BaseModel,
                      spark_kubernetes: dict[str, Any] | None) -> dict[str, Any]:
    """Run a Spark stage as a SparkApplication (``batchrl.kube.launcher``); the stage's own summary is
    in the metadata it commits with its output (``storage.read_metadata``).

    The application reads and writes the same object store as this step: the S3 endpoint and region
    this step uses (the pipeline's ``s3_endpoint``, set by :func:`setup`; ``AWS_REGION``) fill
    ``s3_endpoint`` / ``s3_region`` when ``spark_kubernetes`` does not set them. Its namespace is this
    step's pod's own unless ``spark_kubernetes`` names one (``SparkKubernetesOptions.namespace``)."""
    from batchrl import storage
    from batchrl.kube import launcher

    settings = dict(spark_kubernetes or {})
    endpoint, region = storage.s3_endpoint(), os.environ.get("AWS_REGION")
    if endpoint and "s3_endpoint" not in settings:
        settings["s3_endpoint"] = endpoint
    if region and "s3_region" not in settings:
        settings["s3_region"] = region
    return launcher.run_stage_for_pipeline(stage, input_uri, output_uri, options.model_dump(mode="json"), settings)


def normalization_result(uri: str, result_type: type[NormalizeResultT], **values: Any) -> NormalizeResultT:
    """The normalize stage's result as far as the normalization file at ``uri`` tells it (feature ids and
    type counts; ``values``: the other fields known), for a stage that ran as a SparkApplication."""
    from batchrl.data.normalize import type_counts
    from batchrl.preprocessing.normalization import read_normalization

    normalization = read_normalization(uri)
    return result_type(output=uri, features=len(normalization), feature_ids=list(normalization),
                       types=type_counts(normalization), **values)
