"""One KFP component per stage: typed shells that import the engine inside and call one stage function.

Each function below is a complete lightweight component: its parameters mirror the stage's options
(``tests/kfp/test_components.py`` checks that no option is missing), its artifacts are typed, and it
copies the stage summary's row counts, feature ids, action names and scores into artifact metadata.
:func:`build_components` turns them into components for a pair of images; the trainer image (CUDA)
runs ``train``, the runtime image everything else. No package is installed at run time.

(No ``from __future__ import annotations`` and no ``X | None`` here: KFP reads the annotations as
types and understands ``typing.Optional`` only.)
"""
# ruff: noqa: UP045

from collections.abc import Callable
from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from batchrl.kfp.images import DEFAULT_IMAGES, Images

# ---------------------------------------------------------------- data stages


def generate(
    logged: Output[Dataset],
    env: str = "CartPole-v0",
    transitions: int = 0,
    episodes: int = 0,
    policy: str = "random",
    model: Optional[str] = None,
    epsilon: Optional[float] = None,
    temperature: Optional[float] = None,
    noise: Optional[float] = None,
    seed: int = 42,
    ds: str = "2019-01-01",
    num_envs: int = 16,
    max_steps: int = 0,
    s3_endpoint: str = "",
):
    """Log a policy's decisions in a gymnasium environment (``batchrl generate``).

    Give ``transitions`` or ``episodes`` (0 = not given); ``max_steps`` 0: the env's own time limit;
    ``noise`` (policy ``gaussian``): the Gaussian's std as a fraction of the action range's half-width.
    """
    from batchrl.data import gym_logging
    from batchrl.kfp import runtime

    runtime.setup(s3_endpoint)
    options = runtime.options(gym_logging.GenerateOptions, "generate", env=env, transitions=transitions or None,
                              episodes=episodes or None, policy=policy, model=model, epsilon=epsilon,
                              temperature=temperature, noise=noise, seed=seed, ds=ds, num_envs=num_envs,
                              max_steps=max_steps or None)
    runtime.record(logged, gym_logging.generate(logged.path, options))


def timeline(
    timeline_table: Output[Dataset],
    start_ds: str,
    end_ds: str,
    add_terminal_state_row: bool,
    logged: Input[Dataset] = None,
    input_uri: str = "",
    include_possible_actions: Optional[bool] = None,
    outlier_episode_length_percentile: Optional[float] = None,
    percentile_function: str = "percentile_approx",
    reward_columns: Optional[list] = None,
    extra_feature_columns: Optional[list] = None,
    time_window_limit: int = -1,
    validation_sql: Optional[str] = None,
    steps: int = 0,
    dedup: bool = False,
    spark_master: str = "local[*]",
    spark_conf: Optional[dict] = None,
    spark_mode: str = "local",
    engine: str = "auto",
    spark_kubernetes: Optional[dict] = None,
    s3_endpoint: str = "",
):
    """Build the timeline table (``batchrl timeline``) from ``logged`` or from ``input_uri``.

    ``include_possible_actions`` None: when the logged table has them (continuous-action logs have none);
    ``time_window_limit`` -1 = no limit; ``steps`` 0 = one-step rows. ``engine``: auto (DuckDB in the step's
    pod), duckdb or spark (local Spark, ``spark_master``); ``spark_mode`` ``kubernetes`` runs the work on Spark
    as a SparkApplication (``spark_kubernetes``: its options) on the artifacts' URIs.
    """
    from batchrl.data import timeline as timeline_stage
    from batchrl.errors import BatchRLError
    from batchrl.kfp import runtime

    runtime.setup(s3_endpoint)
    if bool(input_uri) == (logged is not None):
        raise BatchRLError("give exactly one input: the logged artifact or input_uri", where="timeline component",
                           fix="connect the generate step's output, or pass the logged table's URI")
    options = runtime.options(
        timeline_stage.TimelineOptions, "timeline", start_ds=start_ds, end_ds=end_ds,
        add_terminal_state_row=add_terminal_state_row, include_possible_actions=include_possible_actions,
        outlier_episode_length_percentile=outlier_episode_length_percentile,
        percentile_function=percentile_function, reward_columns=reward_columns,
        extra_feature_columns=extra_feature_columns,
        time_window_limit=None if time_window_limit < 0 else time_window_limit, validation_sql=validation_sql,
        steps=steps or None, dedup=dedup)
    from batchrl import storage

    spark = runtime.Spark(spark_master, spark_conf, spark_mode, engine, spark_kubernetes)
    result = runtime.run_data_stage(
        "timeline", spark, options, inputs=input_uri or runtime.object_uri(logged),
        outputs=runtime.object_uri(timeline_table),
        remote_summary=lambda output: timeline_stage.TimelineResult.from_dict(storage.read_metadata(output),
                                                                              where=output),
        local=lambda: timeline_stage.timeline(input_uri or logged.path, timeline_table.path, options,
                                              spark_master=spark_master, engine=engine))
    runtime.record(timeline_table, result)


def normalize(
    timeline_table: Input[Dataset],
    normalization: Output[Artifact],
    column: str = "state_features",
    num_samples: int = 100000,
    seed: int = 0,
    feature_overrides: Optional[dict] = None,
    feature_type: Optional[str] = None,
    max_unique_enum_values: int = 10,
    quantile_size: int = 20,
    quantile_k2_threshold: float = 1000.0,
    skip_box_cox: bool = False,
    skip_quantiles: bool = True,
    stddev_floor: Optional[float] = None,
    spark_master: str = "local[*]",
    spark_conf: Optional[dict] = None,
    spark_mode: str = "local",
    engine: str = "auto",
    spark_kubernetes: Optional[dict] = None,
    s3_endpoint: str = "",
):
    """Identify per-feature normalization (``batchrl normalize``); writes ReAgent's normalization JSON.

    ``spark_mode`` ``kubernetes``: as a SparkApplication, like ``timeline``.
    """
    from batchrl.data import normalize as normalize_stage
    from batchrl.kfp import runtime

    runtime.setup(s3_endpoint)
    options = runtime.options(
        normalize_stage.NormalizeOptions, "normalize", column=column, num_samples=num_samples, seed=seed,
        feature_overrides=feature_overrides, feature_type=feature_type,
        max_unique_enum_values=max_unique_enum_values, quantile_size=quantile_size,
        quantile_k2_threshold=quantile_k2_threshold, skip_box_cox=skip_box_cox, skip_quantiles=skip_quantiles,
        stddev_floor=stddev_floor)
    spark = runtime.Spark(spark_master, spark_conf, spark_mode, engine, spark_kubernetes)
    result = runtime.run_data_stage(
        "normalize", spark, options, inputs=runtime.object_uri(timeline_table),
        outputs=runtime.object_uri(normalization),
        remote_summary=lambda output: runtime.normalization_result(
            output, normalize_stage.NormalizeResult, column=column, num_samples=options.num_samples,
            seed=options.seed),
        local=lambda: normalize_stage.normalize(timeline_table.path, normalization.path, options,
                                                spark_master=spark_master, engine=engine))
    runtime.record(normalization, result)


def normalize_actions(
    timeline_table: Input[Dataset],
    action_normalization: Output[Artifact],
    num_samples: int = 100000,
    seed: int = 0,
    spark_master: str = "local[*]",
    spark_conf: Optional[dict] = None,
    spark_mode: str = "local",
    engine: str = "auto",
    spark_kubernetes: Optional[dict] = None,
    s3_endpoint: str = "",
):
    """CONTINUOUS_ACTION bounds of continuous (map) actions; an empty normalization for discrete ones,
    found from the timeline's schema without Spark. ``spark_mode`` ``kubernetes``: as ``normalize``."""
    from batchrl.data import normalize as normalize_stage
    from batchrl.kfp import runtime

    runtime.setup(s3_endpoint)
    options = runtime.options(normalize_stage.NormalizeOptions, "normalize_actions", column="action",
                              feature_type="CONTINUOUS_ACTION", num_samples=num_samples, seed=seed)
    spark = runtime.Spark(spark_master, spark_conf, spark_mode, engine, spark_kubernetes)
    result = runtime.run_data_stage(
        "normalize_actions", spark, options, job="normalize", inputs=runtime.object_uri(timeline_table),
        outputs=runtime.object_uri(action_normalization),
        uses_spark=normalize_stage.has_continuous_actions(timeline_table.path),
        remote_summary=lambda output: runtime.normalization_result(
            output, normalize_stage.NormalizeActionsResult, column="action", action_kind="continuous"),
        local=lambda: normalize_stage.normalize_actions(timeline_table.path, action_normalization.path, options,
                                                        spark_master=spark_master, engine=engine))
    runtime.record(action_normalization, result)


def prepare(
    timeline_table: Input[Dataset],
    normalization: Input[Artifact],
    train_table: Output[Dataset],
    eval_table: Output[Dataset],
    action_normalization: Input[Artifact] = None,
    actions: Optional[list] = None,
    table_sample: float = 90.0,
    eval_table_sample: float = 10.0,
    multi_steps: int = 0,
    gamma: Optional[float] = None,
    custom_reward_expression: Optional[str] = None,
    split_seed: int = 0,
    spark_master: str = "local[*]",
    spark_conf: Optional[dict] = None,
    spark_mode: str = "local",
    engine: str = "auto",
    spark_kubernetes: Optional[dict] = None,
    s3_endpoint: str = "",
):
    """Build the dense train and eval tables (``batchrl prepare``), split by a stable hash of mdp_id.

    ``actions`` None or []: the sorted logged actions (continuous actions: ignored, their ids come from
    ``action_normalization``); ``multi_steps`` 0: one-step rewards (``gamma``, the k-step rewards' discount,
    is then unused). ``spark_mode`` ``kubernetes``: as a
    SparkApplication, like ``timeline``.
    """
    from batchrl.data import prepare as prepare_stage
    from batchrl.data.normalize import has_continuous_actions
    from batchrl.kfp import runtime

    runtime.setup(s3_endpoint)
    if has_continuous_actions(timeline_table.path):
        actions = None
    options = runtime.options(prepare_stage.PrepareOptions, "prepare", actions=actions or None,
                              table_sample=table_sample,
                              eval_table_sample=eval_table_sample, multi_steps=multi_steps or None,
                              gamma=gamma if multi_steps else None,
                              custom_reward_expression=custom_reward_expression, split_seed=split_seed)
    from batchrl import storage

    inputs = {"timeline": runtime.object_uri(timeline_table), "normalization": runtime.object_uri(normalization)}
    if action_normalization is not None:
        inputs["action_normalization"] = runtime.object_uri(action_normalization)

    def remote_tables(outputs: dict) -> dict:
        """Each table as its committed metadata describes it."""
        return {part: prepare_stage.PreparedTable.from_dict(storage.read_metadata(uri), where=uri)
                for part, uri in outputs.items()}

    def local_tables() -> dict:
        result = prepare_stage.prepare(
            timeline_table.path, normalization.path, train_table.path, eval_table.path, options,
            spark_master=spark_master, engine=engine,
            action_normalization=action_normalization.path if action_normalization is not None else None)
        return {part: result.table(part) for part in ("train", "eval")}

    spark = runtime.Spark(spark_master, spark_conf, spark_mode, engine, spark_kubernetes)
    tables = runtime.run_data_stage(
        "prepare", spark, options, inputs=inputs, remote_summary=remote_tables, local=local_tables,
        outputs={"train": runtime.object_uri(train_table), "eval": runtime.object_uri(eval_table)})
    runtime.record(train_table, tables["train"])
    runtime.record(eval_table, tables["eval"])


# ---------------------------------------------------------------- training


def train(
    train_table: Input[Dataset],
    eval_table: Input[Dataset],
    normalization: Input[Artifact],
    model: Output[Model],
    training_metrics: Output[Metrics],
    workflow_config: dict,
    num_epochs: int = 0,
    algorithm: str = "",
    seed: int = -1,
    actions: Optional[list] = None,
    device: Optional[str] = None,
    s3_endpoint: str = "",
):
    """Train the configured agent (``batchrl train``): CUDA when the pod has a GPU, else CPU.

    ``num_epochs``, ``algorithm``, ``seed``, ``actions`` and ``device`` override ``workflow_config``
    (0, "", -1, None or [] and None keep its values; ``actions`` applies to discrete-action models only).
    """
    from batchrl.kfp import runtime
    from batchrl.training import train as train_stage

    runtime.setup(s3_endpoint)
    config = runtime.workflow_config(workflow_config, "train component workflow_config", num_epochs=num_epochs or None,
                                     algorithm=algorithm or None, seed=None if seed < 0 else seed,
                                     actions=actions or None)
    result = train_stage.train(config, train_table.path, eval_table.path, normalization.path, model.path,
                               device=device)
    runtime.record(model, result)
    runtime.log_metrics(training_metrics, {"loss": result.final_losses, "eval_td_loss": result.eval_td_loss,
                                           "cpe": result.cpe})


# ---------------------------------------------------------------- evaluation


def evaluate(
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    report_html: Output[HTML],
    eval_table: Input[Dataset] = None,
    env: str = "",
    episodes: int = 50,
    seed: int = 42,
    passing_score_bar: Optional[float] = None,
    gate: str = "score",
    gamma: Optional[float] = None,
    temperature: Optional[float] = None,
    bootstrap: int = 200,
    switch_threshold: float = 10.0,
    fqe: bool = True,
    fqe_iterations: int = 1000,
    num_envs: int = 16,
    max_steps: int = 0,
    logging_policy: str = "random",
    logging_temperature: float = 1.0,
    s3_endpoint: str = "",
) -> bool:
    """Counterfactual evaluation on ``eval_table`` and greedy rollouts in ``env`` (``batchrl evaluate``).
    ``logging_policy`` / ``logging_temperature``: the ``logging`` baseline in a candidate-set environment.

    Returns whether the model passes: ``gate`` ``score`` compares the mean gym return with
    ``passing_score_bar``, ``cpe`` the lower 95% bound of the normalized estimate the diagnostics trust
    (sequential for multi-step logs; a flagged estimate never passes);
    ``none`` never passes (no publishing).
    ``env`` "": no rollouts; ``max_steps`` 0: the env's own time limit.
    """
    import shutil

    from batchrl.evaluation import evaluate as evaluate_stage
    from batchrl.kfp import runtime

    runtime.setup(s3_endpoint)
    options = runtime.options(
        evaluate_stage.EvaluateOptions, "evaluate", env=env or None, episodes=episodes, seed=seed,
        passing_score_bar=passing_score_bar, gamma=gamma, temperature=temperature, bootstrap=bootstrap,
        switch_threshold=switch_threshold, fqe=fqe, fqe_iterations=fqe_iterations, num_envs=num_envs,
        max_steps=max_steps or None, logging_policy=logging_policy, logging_temperature=logging_temperature)
    result = evaluate_stage.evaluate(model.path, eval_table.path if eval_table is not None else None,
                                     evaluation.path, options)
    shutil.copyfile(result.report_md, report.path)
    shutil.copyfile(result.report_html, report_html.path)
    verdict = runtime.gate(result, gate, passing_score_bar)
    runtime.record(evaluation, result)
    runtime.record(evaluation, verdict)
    runtime.log_metrics(metrics, {"gym": result.gym or {}, "cpe": result.cpe})
    return verdict.passed


def publish(
    model: Input[Model],
    evaluation: Input[Artifact],
    published: Output[Model],
    destination: str = "",
    s3_endpoint: str = "",
):
    """Publish the model that passed: its serving files and reports, committed at ``destination``
    (and always as this step's ``published`` artifact)."""
    from batchrl.kfp import publish as publish_stage
    from batchrl.kfp import runtime

    runtime.setup(s3_endpoint)
    # the evaluate step's GateResult, as KFP hands its metadata on
    verdict = {"score": evaluation.metadata.get("score"), "passed": evaluation.metadata.get("passed")}
    result = publish_stage.publish(model.path, evaluation.path, published.path, **verdict)
    if destination:
        result = publish_stage.publish(model.path, evaluation.path, destination, **verdict)
    runtime.record(published, result)


# ---------------------------------------------------------------- platform


def gpu_request(
    mode: str = "auto",
    gpus: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    tolerations: Optional[list] = None,
    node_selector: Optional[dict] = None,
) -> NamedTuple("Outputs", [("limit", str), ("tolerations", list), ("node_selector", dict), ("reason", str)]):
    """The training pod's accelerator limit and placement (``batchrl.kfp.accelerators.plan``).

    ``limit`` is a string because the KFP driver reads a runtime accelerator count only as a string
    (any other type drops the limit silently); "0" when training runs on CPU (``auto`` on a cluster
    without a node that can allocate ``gpus``). ``tolerations`` and ``node_selector`` are the given
    ones with a GPU request and empty without one, so a CPU-only training pod stays off GPU nodes.
    ``reason`` says why, including when the node list could not be read (e.g. HTTP 403).
    """
    import logging

    from batchrl.kfp import accelerators, runtime

    runtime.setup()
    placement = accelerators.plan(mode, gpus, accelerator_type, tolerations or [], node_selector or {})
    logging.getLogger("batchrl.kfp").info("training accelerators: %s (%s)", placement.limit, placement.reason)
    return placement.limit, placement.tolerations, placement.node_selector, placement.reason


# ---------------------------------------------------------------- building


#: Component name -> (function, which image runs it).
STEPS: dict[str, tuple[Callable, str]] = {
    "generate": (generate, "runtime"),
    "timeline": (timeline, "runtime"),
    "normalize": (normalize, "runtime"),
    "normalize_actions": (normalize_actions, "runtime"),
    "prepare": (prepare, "runtime"),
    "train": (train, "trainer"),
    "evaluate": (evaluate, "runtime"),
    "publish": (publish, "runtime"),
    "gpu_request": (gpu_request, "runtime"),
}


def build_component(name: str, images: Images = DEFAULT_IMAGES):
    """The KFP component of step ``name`` running in its image (no pip install at run time)."""
    func, image = STEPS[name]
    return dsl.component(func, base_image=getattr(images, image), install_kfp_package=False)


def build_components(images: Images = DEFAULT_IMAGES) -> dict:
    """Every component (name -> KFP component), built for one pair of images."""
    return {name: build_component(name, images) for name in STEPS}
