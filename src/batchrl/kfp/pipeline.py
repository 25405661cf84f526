"""The batch-RL pipeline: ReAgent's offline workflow as Kubeflow Pipelines, with its platform settings.

::

    gym data:    generate -> timeline ─┐
    logged data:            timeline ─┴─> normalize ──────────> prepare -> train -> evaluate -> [score >= bar] publish
                                          normalize_actions ─┘     gpu_request ─┘

``normalize_actions`` finds the bounds of continuous (map) actions (SAC/TD3 configs); for discrete
actions it only reads the timeline's schema and writes an empty normalization.

``input_uri`` empty: logged data is generated in the ``env`` gym environment (seeded, cached); else
the timeline reads the logged table at ``input_uri`` (not cached: the data behind a URI may change).
The rest is one sub-pipeline (``train-and-evaluate``) used by both branches. Platform settings
(ignored by ``kfp.local``): GPU request for training with a CPU fallback (``gpu_request`` counts the
cluster's allocatable GPUs when ``gpu_mode=auto`` and passes the accelerator limit as the string the
KFP driver needs, with the GPU tolerations and node selector only when it requests GPUs), object-store
credentials from a Kubernetes secret as environment variables, CPU/memory requests, retries with
exponential backoff, caching on for deterministic steps only. The data steps run on ``engine``
(auto: DuckDB inside the step's pod; spark: local Spark with ``spark_master``); ``spark_mode=kubernetes``
runs them as SparkApplications on the artifacts' object-store URIs (``spark_kubernetes``:
the application's options, see ``batchrl.kube.sparkapp.SparkKubernetesOptions``; its default names the
Spark image of the compiled :class:`~batchrl.kfp.images.Images`).

Defaults: the workflow config and every default that mirrors one of its fields (env, transitions, seeds,
actions, sampling, epochs, evaluation episodes, passing bar; ``multi_steps``, the k of ``rl.multi_steps``,
which makes the timeline and prepare build k-step rows discounted by ``gamma``) come from the shipped
``configs/cartpole_dqn_offline.yaml`` (package data), the file ``make run`` trains, so the two cannot
drift (:func:`config_defaults`). No pipeline root is compiled in unless given (``pipeline_root``): KFP's
own default (its ``kfp-launcher`` ConfigMap) applies, or the one a run is submitted with.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline functions' annotations as types.
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Input

from batchrl.kfp.components import build_components
from batchrl.kfp.images import DEFAULT_IMAGES, Images
from batchrl.stages import stage_options

PIPELINE_NAME = "batch-rl"
#: The secret's keys are the variable names (the same secret the Spark applications read).
SECRET_ENV = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
#: The shipped workflow config the pipeline's defaults come from (``batchrl/configs/``, package data).
DEFAULT_CONFIG = "cartpole_dqn_offline.yaml"
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class Resources:
    """A step's CPU and memory requests (Kubernetes quantities)."""

    cpu: str
    memory: str


#: Requests per step: Spark steps get the local Spark's cores and driver memory; training the most.
RESOURCES = {
    "generate": Resources(cpu="1", memory="2Gi"),
    "timeline": Resources(cpu="2", memory="6Gi"),
    "normalize": Resources(cpu="2", memory="6Gi"),
    "normalize_actions": Resources(cpu="2", memory="6Gi"),
    "prepare": Resources(cpu="2", memory="6Gi"),
    "gpu_request": Resources(cpu="100m", memory="256Mi"),
    "train": Resources(cpu="4", memory="8Gi"),
    "evaluate": Resources(cpu="2", memory="4Gi"),
    "publish": Resources(cpu="500m", memory="1Gi"),
}


@dataclass(frozen=True)
class Retry:
    """Retries of a failed step: ``backoff`` after the first failure, times ``factor`` after each next one."""

    attempts: int = 2
    backoff: str = "30s"
    factor: float = 2.0
    max_backoff: str = "600s"


RETRY = Retry()
#: Steps whose result depends only on their inputs and seeds; the others always run.
CACHED = {"generate", "normalize", "normalize_actions", "prepare", "train", "evaluate"}


def configure(task: dsl.PipelineTask, step: str, secret: str | None) -> dsl.PipelineTask:
    """Resources, retries, caching and (for steps that touch the object store) the credentials secret."""
    resources = RESOURCES[step]
    task.set_cpu_request(resources.cpu).set_memory_request(resources.memory)
    task.set_retry(RETRY.attempts, backoff_duration=RETRY.backoff, backoff_factor=RETRY.factor,
                   backoff_max_duration=RETRY.max_backoff)
    task.set_caching_options(step in CACHED)
    # optional: without the secret the pod still starts (node or IRSA identity), and a step that then
    # lacks credentials fails with the storage layer's message naming the variables
    if secret is not None:
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=SECRET_ENV, optional=True)
    return task


def shipped_config(name: str = DEFAULT_CONFIG) -> Traversable:
    """A shipped workflow config file (``configs/<name>`` in the repository, package data when installed)."""
    return resources.files("batchrl") / "configs" / name


def default_workflow_config(name: str = DEFAULT_CONFIG) -> dict:
    """The shipped config ``name``, validated, as the pipeline's ``workflow_config`` default."""
    from batchrl.config import load_config

    with resources.as_file(shipped_config(name)) as path:
        config = load_config(path)
    return config.model_dump(mode="json", exclude_unset=True)


#: The config fields the pipeline's defaults mirror; the default config must set each (no fallback
#: here, so there is no second copy of ``batchrl run``'s fallbacks to drift).
MIRRORED_FIELDS = ("env_name", "num_train_transitions", "input_table_spec.table_sample",
                   "input_table_spec.eval_table_sample", "num_eval_episodes", "passing_score_bar")


def config_defaults(workflow_config: dict) -> dict[str, Any]:
    """The pipeline parameters that mirror a field of ``workflow_config`` (see :data:`MIRRORED_FIELDS`): the
    stages' options from the config (:func:`batchrl.stages.stage_options`, what ``batchrl run`` uses)."""
    from batchrl.config import parse_config
    from batchrl.errors import BatchRLError

    where = "pipeline default workflow_config"
    config = parse_config(workflow_config, where=where)
    mirrored = {name: _field(config, name) for name in MIRRORED_FIELDS}
    missing = [name for name, value in mirrored.items() if value is None]
    if missing:
        raise BatchRLError(f"the pipeline's default config does not set {', '.join(missing)}", where=where,
                           fix=f"set them, as configs/{DEFAULT_CONFIG} does")
    options = stage_options(config)
    generate, normalize, prepare, evaluate = (options[name] for name in ("generate", "normalize", "prepare",
                                                                          "evaluate"))
    return {
        "env": generate.env, "transitions": generate.transitions, "max_steps": generate.max_steps or 0,
        "data_seed": generate.seed, "train_seed": config.seed, "actions": prepare.actions or [],
        "table_sample": float(prepare.table_sample), "eval_table_sample": float(prepare.eval_table_sample),
        "num_samples": normalize.num_samples, "skip_box_cox": normalize.skip_box_cox,
        "action_num_samples": options["normalize_actions"].num_samples, "num_epochs": config.num_epochs,
        "num_eval_episodes": evaluate.episodes, "passing_score_bar": float(evaluate.passing_score_bar),
        "logging_policy": generate.policy, "logging_temperature": float(generate.temperature),
        "multi_steps": prepare.multi_steps or 0, "gamma": float(config.model.value.trainer_param.rl.gamma),
    }


def _field(config: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


@cache
def build_pipeline(images: Images = DEFAULT_IMAGES, pipeline_root: str | None = None) -> Any:
    """The batch-RL pipeline (a KFP graph component) whose steps run in ``images``; ``pipeline_root``
    (optional) is compiled in as its default artifact root (a run's own pipeline root overrides it).

    Long because KFP's DSL declares a graph as the body of one decorated function: its parameters are the
    pipeline's, its statements the steps and their wiring (the options each step takes come from
    :mod:`batchrl.stages`)."""
    ops = build_components(images)
    default_config = default_workflow_config()
    defaults = config_defaults(default_config)

    @dsl.pipeline(name="train-and-evaluate", description="normalize, prepare, train (GPU when the cluster "
                  "has one), evaluate, and publish when the evaluation passes")
    def train_and_evaluate(
        timeline_table: Input[Dataset], actions: list, table_sample: float, eval_table_sample: float,
        num_samples: int, skip_box_cox: bool, action_num_samples: int, max_steps: int, data_seed: int, workflow_config: dict, algorithm: str, num_epochs: int, train_seed: int,
        env: str, num_eval_episodes: int, cpe_bootstrap: int, fqe: bool, passing_score_bar: float,
        publish_gate: str, publish_uri: str, gpu_mode: str, gpus: int, accelerator_type: str, gpu_tolerations: list, gpu_node_selector: dict,
        spark_master: str, spark_conf: dict, spark_mode: str, spark_kubernetes: dict, s3_endpoint: str,
        object_store_secret: str, engine: str, logging_policy: str, logging_temperature: float,
        multi_steps: int, gamma: float,
    ) -> None:
        spark = {"spark_master": spark_master, "spark_conf": spark_conf, "spark_mode": spark_mode,
                 "spark_kubernetes": spark_kubernetes, "s3_endpoint": s3_endpoint, "engine": engine}
        normalize = ops["normalize"](timeline_table=timeline_table, num_samples=num_samples, seed=data_seed,
                                     skip_box_cox=skip_box_cox, **spark)
        configure(normalize, "normalize", object_store_secret)
        normalize_actions = ops["normalize_actions"](timeline_table=timeline_table, num_samples=action_num_samples,
                                                     seed=data_seed, **spark)
        configure(normalize_actions, "normalize_actions", object_store_secret)
        prepare = ops["prepare"](timeline_table=timeline_table,
                                 normalization=normalize.outputs["normalization"],
                                 action_normalization=normalize_actions.outputs["action_normalization"],
                                 actions=actions,
                                 table_sample=table_sample, eval_table_sample=eval_table_sample,
                                 multi_steps=multi_steps, gamma=gamma, **spark)
        configure(prepare, "prepare", object_store_secret)

        gpu = ops["gpu_request"](mode=gpu_mode, gpus=gpus, accelerator_type=accelerator_type,
                                 tolerations=gpu_tolerations, node_selector=gpu_node_selector)
        configure(gpu, "gpu_request", None)  # reads the node list only: no object-store credentials
        train = ops["train"](train_table=prepare.outputs["train_table"], eval_table=prepare.outputs["eval_table"],
                             normalization=normalize.outputs["normalization"], workflow_config=workflow_config,
                             num_epochs=num_epochs, algorithm=algorithm, seed=train_seed, actions=actions,
                             s3_endpoint=s3_endpoint)
        configure(train, "train", object_store_secret)
        # the limit is a string output (the driver drops a non-string one); placement only with GPUs
        train.set_accelerator_type(accelerator_type).set_accelerator_limit(gpu.outputs["limit"])
        kubernetes.add_toleration_json(train, gpu.outputs["tolerations"])
        kubernetes.add_node_selector_json(train, gpu.outputs["node_selector"])

        evaluate = ops["evaluate"](model=train.outputs["model"], eval_table=prepare.outputs["eval_table"], env=env,
                                   episodes=num_eval_episodes, seed=train_seed, bootstrap=cpe_bootstrap, fqe=fqe,
                                   max_steps=max_steps, logging_policy=logging_policy,
                                   logging_temperature=logging_temperature,
                                   passing_score_bar=passing_score_bar, gate=publish_gate, s3_endpoint=s3_endpoint)
        configure(evaluate, "evaluate", object_store_secret)
        with dsl.If(evaluate.outputs["Output"] == True, name="passes-the-bar"):  # noqa: E712 (a KFP condition)
            publish = ops["publish"](model=train.outputs["model"], evaluation=evaluate.outputs["evaluation"],
                                     destination=publish_uri, s3_endpoint=s3_endpoint)
            configure(publish, "publish", object_store_secret)

    @dsl.pipeline(name=PIPELINE_NAME, description="Batch (offline) RL, ReAgent's workflow: logged data -> "
                  "timeline -> normalization -> training tables -> training (DQN, CQL, ..., SAC, TD3) -> CPE and gym "
                  "evaluation "
                  "-> publish when it passes", pipeline_root=pipeline_root)
    def batch_rl(
        env: str = defaults["env"],
        input_uri: str = "",
        transitions: int = defaults["transitions"],
        max_steps: int = defaults["max_steps"],
        data_seed: int = defaults["data_seed"],
        start_ds: str = "2019-01-01",
        end_ds: str = "2019-01-01",
        add_terminal_state_row: bool = True,
        actions: list = defaults["actions"],
        table_sample: float = defaults["table_sample"],
        eval_table_sample: float = defaults["eval_table_sample"],
        num_samples: int = defaults["num_samples"],
        skip_box_cox: bool = defaults["skip_box_cox"],
        action_num_samples: int = defaults["action_num_samples"],
        workflow_config: dict = default_config,
        algorithm: str = "",
        num_epochs: int = defaults["num_epochs"],
        train_seed: int = defaults["train_seed"],
        num_eval_episodes: int = defaults["num_eval_episodes"],
        cpe_bootstrap: int = 200,
        fqe: bool = True,
        passing_score_bar: float = defaults["passing_score_bar"],
        publish_gate: str = "score",
        publish_uri: str = "",
        gpu_mode: str = "auto",
        gpus: int = 1,
        accelerator_type: str = "nvidia.com/gpu",
        gpu_tolerations: list = GPU_TOLERATIONS,
        gpu_node_selector: dict = {},  # noqa: B006
        spark_master: str = "local[*]",
        spark_conf: dict = {},  # noqa: B006
        spark_mode: str = "local",
        spark_kubernetes: dict = {"image": images.spark},  # noqa: B006
        s3_endpoint: str = "",
        object_store_secret: str = "batchrl-s3",
        engine: str = "auto",
        logging_policy: str = defaults["logging_policy"],
        logging_temperature: float = defaults["logging_temperature"],
        multi_steps: int = defaults["multi_steps"],
        gamma: float = defaults["gamma"],
    ) -> None:
        rest = {"actions": actions, "table_sample": table_sample, "eval_table_sample": eval_table_sample,
                "num_samples": num_samples, "skip_box_cox": skip_box_cox,
                "action_num_samples": action_num_samples, "max_steps": max_steps, "data_seed": data_seed, "workflow_config": workflow_config,
                "algorithm": algorithm, "num_epochs": num_epochs, "train_seed": train_seed, "env": env,
                "num_eval_episodes": num_eval_episodes, "cpe_bootstrap": cpe_bootstrap, "fqe": fqe,
                "passing_score_bar": passing_score_bar,
                "publish_gate": publish_gate, "publish_uri": publish_uri, "gpu_mode": gpu_mode, "gpus": gpus,
                "accelerator_type": accelerator_type, "gpu_tolerations": gpu_tolerations,
                "gpu_node_selector": gpu_node_selector, "spark_master": spark_master, "spark_conf": spark_conf,
                "spark_mode": spark_mode, "spark_kubernetes": spark_kubernetes, "s3_endpoint": s3_endpoint,
                "object_store_secret": object_store_secret, "engine": engine, "logging_policy": logging_policy,
                "logging_temperature": logging_temperature, "multi_steps": multi_steps, "gamma": gamma}
        timeline = {"start_ds": start_ds, "end_ds": end_ds, "add_terminal_state_row": add_terminal_state_row,
                    "spark_master": spark_master, "spark_conf": spark_conf, "spark_mode": spark_mode,
                    "spark_kubernetes": spark_kubernetes, "s3_endpoint": s3_endpoint, "engine": engine,
                    "steps": multi_steps}
        with dsl.If(input_uri == "", name="gym-data"):
            generate = ops["generate"](env=env, transitions=transitions, seed=data_seed, ds=end_ds,
                                       max_steps=max_steps, policy=logging_policy, temperature=logging_temperature,
                                       s3_endpoint=s3_endpoint)
            configure(generate, "generate", object_store_secret)
            generated = ops["timeline"](logged=generate.outputs["logged"], **timeline)
            configure(generated, "timeline", object_store_secret).set_caching_options(True)
            generated.set_display_name("timeline (generated data)")
            train_and_evaluate(timeline_table=generated.outputs["timeline_table"], **rest)
        with dsl.Else(name="logged-data"):
            logged = ops["timeline"](input_uri=input_uri, **timeline)
            configure(logged, "timeline", object_store_secret)  # not cached: reads whatever the URI holds now
            logged.set_display_name("timeline (input_uri)")
            train_and_evaluate(timeline_table=logged.outputs["timeline_table"], **rest)

    return batch_rl
