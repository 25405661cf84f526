"""The train stage: prepared tables + normalization + config -> a model directory.

Model directory (local or s3://)::

    model.torchscript          (values, presence) -> (action names, Q-values)   spec section 8
                               continuous actions (SAC, TD3): -> (action names, actions in the logged units)
    reward_model.torchscript   same signature, r_hat(s, .)     } when eval_parameters.calc_cpe_in_training
    q_value_model.torchscript  same signature, Q_hat(s, .)     }
    training_summary.json      config, per-epoch metrics (incl. CPE), final metrics, gamma, temperature
    checkpoints/epoch-XXXX.pt  every checkpoint_every epochs and after the last (the latest keep_checkpoints)
    tensorboard/               event files (losses, Q-values per action, action distribution, lr, CPE)

CPU runs are seeded and deterministic; ``resume=True`` continues from the latest checkpoint and ends
with the same model as an uninterrupted run. CUDA is used when present (mixed precision).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from batchrl import __version__, storage
from batchrl.config import WorkflowConfig
from batchrl.config.continuous import ContinuousModelBase
from batchrl.config.parametric import ParametricModelBase
from batchrl.data.loader import Batch, DatasetInfo, TransitionLoader, dataset_info, read_eval_batch
from batchrl.errors import BatchRLError
from batchrl.models.builders import build_network
from batchrl.preprocessing.normalization import from_json_dict, read_normalization
from batchrl.preprocessing.preprocessor import Preprocessor
from batchrl.results import StageResult, not_printed, when_set
from batchrl.serving.export import export_model
from batchrl.serving.parametric import export_parametric_model
from batchrl.training.algorithms import build_trainer, export_policy
from batchrl.training.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from batchrl.training.cpe_models import CPETrainer
from batchrl.training.inputs import amp_dtype, parametric_preprocess_fn, preprocess_fn, resolve_device
from batchrl.training.loop import LoopState, TensorBoardLog, TrainingLoop
from batchrl.training.metrics import epoch_metrics
from batchrl.training.selection import select_epoch
from batchrl.training.trainer import Trainer

__all__ = ["amp_dtype", "config_fingerprint", "preprocess_fn", "resolve_device", "train"]

log = logging.getLogger(__name__)

MODEL_FILE = "model.torchscript"
REWARD_MODEL_FILE = "reward_model.torchscript"
VALUE_MODEL_FILE = "q_value_model.torchscript"
SUMMARY_FILE = "training_summary.json"
#: Bootstrap replicates of the CPE intervals after the last epoch (earlier epochs: point estimates only;
#: the sequential estimators' intervals cost seconds per replicate set).
CPE_BOOTSTRAP = 200
#: Config keys that may change when resuming (they do not change the trained model).
RESUMABLE_CHANGES = ("num_epochs", "checkpoint_every", "keep_checkpoints", "device", "cpu_threads")


def config_fingerprint(config: WorkflowConfig) -> str:
    """Hash of the settings a resumed run must share with the run that wrote the checkpoint."""
    data = config.model_dump(mode="json", exclude=set(RESUMABLE_CHANGES))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _check_parametric_tables(config: WorkflowConfig, train: DatasetInfo, eval_: DatasetInfo) -> None:
    model = config.model.value
    if config.model.parametric != train.parametric:
        raise BatchRLError(f"{config.model.name} and the training table disagree on parametric actions (items "
                           f"among candidate sets): the table's actions are {train.num_candidates and 'parametric'}"
                           f"{'' if train.num_candidates else 'discrete or continuous'}", where=train.uri,
                           fix="use ParametricDQN/ParametricCQL on tables prepared from candidate sets, and the "
                               "other algorithms elsewhere")
    expected = [str(i) for i, _ in getattr(model, "action_float_features", None) or []]
    if expected and expected != train.action_names:
        raise BatchRLError(f"action_float_features ids {expected} differ from the training table's item feature "
                           f"ids {train.action_names}", where=train.uri,
                           fix="list the action normalization's feature ids in action_float_features")
    if (eval_.action_names, eval_.feature_ids, eval_.num_candidates) != (train.action_names, train.feature_ids,
                                                                           train.num_candidates):
        raise BatchRLError("the eval table's feature ids, item features or candidate-set size differ from the "
                           "training table's", where=eval_.uri, fix="prepare both tables in one `batchrl prepare` run")


def _check_tables(config: WorkflowConfig, train: DatasetInfo, eval_: DatasetInfo) -> None:
    if config.model.parametric or train.parametric:
        _check_parametric_tables(config, train, eval_)
        return
    model = config.model.value
    if config.model.continuous != train.continuous:
        kinds = ("discrete", "continuous")
        raise BatchRLError(f"{config.model.name} trains on {kinds[config.model.continuous]} actions but the "
                           f"training table's actions are {kinds[train.continuous]}", where=train.uri,
                           fix="use SAC or TD3 for continuous (map) actions and a discrete algorithm otherwise")
    if isinstance(model, ContinuousModelBase):
        expected = [str(i) for i, _ in model.action_float_features or []]
        if expected and expected != train.action_names:
            raise BatchRLError(f"action_float_features ids {expected} differ from the training table's action "
                               f"feature ids {train.action_names}", where=train.uri,
                               fix="list the action normalization's feature ids in action_float_features")
    elif isinstance(model, ParametricModelBase):
        raise TypeError("parametric models are checked by _check_parametric_tables")
    elif train.action_names != model.trainer_param.actions:
        raise BatchRLError(f"the config's actions {model.trainer_param.actions} differ from the training table's "
                           f"{train.action_names}", where=train.uri, fix="set trainer_param.actions to the actions "
                           "the table was prepared with (same order)")
    else:
        _check_steps(model.trainer_param.rl.multi_steps, train)
    if (eval_.action_names != train.action_names or eval_.feature_ids != train.feature_ids
            or eval_.continuous != train.continuous):
        raise BatchRLError("the eval table's feature ids or actions differ from the training table's",
                           where=eval_.uri, fix="prepare both tables in one `batchrl prepare` run")


def _check_steps(multi_steps: int | None, train: DatasetInfo) -> None:
    """``rl.multi_steps`` and the rows the table was prepared with agree (k-step rows carry discounted sums of
    k rewards; one-step training on them, or k-step training on one-step rows, would be silently wrong)."""
    if (multi_steps or 1) != (train.multi_steps or 1):
        raise BatchRLError(f"rl.multi_steps is {multi_steps} but the training table has "
                           f"{train.multi_steps or 1}-step rows", where=train.uri,
                           fix="prepare with --multi-steps equal to rl.multi_steps (the KFP pipeline: set its "
                           "multi_steps and gamma parameters to the config's), or change rl.multi_steps")


@dataclass
class _Setup:
    """What differs between discrete and continuous training; the rest of :func:`train` is shared."""

    trainer: Trainer
    cpe: CPETrainer | None
    transform: Callable[[Batch], Batch]
    evaluate: Callable[[Batch, int], dict[str, Any]]  # (eval batch, epoch) -> metrics
    export: Callable[[str, dict[str, Any]], dict[str, str]]  # (output, metadata) -> {artifact: uri}


def _discrete_setup(config: WorkflowConfig, info: DatasetInfo, preprocessor: Preprocessor, norm_json: dict[str, Any],
                    dev: torch.device, amp: torch.dtype | None) -> _Setup:
    model_config = config.model.value
    if isinstance(model_config, ContinuousModelBase | ParametricModelBase):
        raise TypeError(f"{config.model.name} is not a discrete-action algorithm")
    params = model_config.trainer_param
    num_actions = len(params.actions)
    trainer = build_trainer(config.model, preprocessor.output_dim, num_actions, device=dev, amp_dtype=amp)
    cpe = None
    if model_config.evaluation.calc_cpe_in_training:
        cpe = CPETrainer(build_network(model_config.cpe_net_builder, preprocessor.output_dim, num_actions),
                         build_network(model_config.cpe_net_builder, preprocessor.output_dim, num_actions),
                         trainer.q_network, params, device=dev, amp_dtype=amp)

    selection = config.checkpoint_selection
    every_epoch_intervals = selection is not None and selection.statistic == "ci_low"

    def evaluate(eval_batch: Batch, epoch: int) -> dict[str, Any]:
        return epoch_metrics(trainer, cpe, eval_batch, params.actions, gamma=params.rl.gamma,
                             temperature=params.rl.temperature, seed=config.seed,
                             bootstrap=CPE_BOOTSTRAP if epoch == config.num_epochs or every_epoch_intervals else 0)

    def export(output: str, metadata: dict[str, Any]) -> dict[str, str]:
        paths = {"model": f"{output}/{MODEL_FILE}"}
        export_policy(paths["model"], trainer, preprocessor, params.actions, info.feature_ids, norm_json, metadata)
        if cpe is not None:
            paths["reward_model"] = f"{output}/{REWARD_MODEL_FILE}"
            paths["q_value_model"] = f"{output}/{VALUE_MODEL_FILE}"
            export_model(paths["reward_model"], preprocessor, cpe.reward_network, params.actions, info.feature_ids,
                         norm_json, {**metadata, "output": "reward"})
            export_model(paths["q_value_model"], preprocessor, cpe.value_network, params.actions,
                         info.feature_ids, norm_json, {**metadata, "output": "cpe_q_values"})
        return paths

    return _Setup(trainer, cpe, preprocess_fn(preprocessor), evaluate, export)


def continuous_epoch_metrics(trainer: Trainer, eval_batch: Batch, action_names: list[str]) -> dict[str, Any]:
    """Per-epoch metrics on the (preprocessed) eval batch: the held-out terms and the mean action per
    dimension of the policy and of the logged data (normalized units, [-1, 1])."""
    terms = {name: float(value) for name, value in trainer.evaluate(eval_batch).items()}
    with torch.no_grad():
        policy = trainer.q_network(eval_batch.state).float().cpu()
    logged = eval_batch.action.float().cpu()
    return {"eval": terms,
            "policy_action_mean": {a: float(policy[:, i].mean()) for i, a in enumerate(action_names)},
            "logged_action_mean": {a: float(logged[:, i].mean()) for i, a in enumerate(action_names)}}


def _continuous_setup(config: WorkflowConfig, info: DatasetInfo, preprocessor: Preprocessor, norm_json: dict[str, Any],
                      dev: torch.device, amp: torch.dtype | None) -> _Setup:
    """SAC / TD3 on a continuous-action table: actions scaled to [-1, 1] by their CONTINUOUS_ACTION
    normalization (from the table's metadata); the exported actor maps back to [min, max]."""
    action_normalization = from_json_dict(info.action_normalization, where=f"{info.uri} action_normalization")
    action_ids = [int(a) for a in info.action_names]
    action_preprocessor = Preprocessor(action_normalization, action_ids).to(dev)
    trainer = build_trainer(config.model, preprocessor.output_dim, len(action_ids), device=dev, amp_dtype=amp,
                            seed=config.seed)
    low = [action_normalization[i].required("min_value") for i in action_ids]
    high = [action_normalization[i].required("max_value") for i in action_ids]

    def export(output: str, metadata: dict[str, Any]) -> dict[str, str]:
        uri = f"{output}/{MODEL_FILE}"
        export_policy(uri, trainer, preprocessor, info.action_names, info.feature_ids, norm_json,
                      {**metadata, "action_normalization": info.action_normalization}, action_bounds=(low, high))
        return {"model": uri}

    return _Setup(trainer, None, preprocess_fn(preprocessor, action_preprocessor),
                  lambda eval_batch, epoch: continuous_epoch_metrics(trainer, eval_batch, info.action_names),
                  export)


def _parametric_setup(config: WorkflowConfig, info: DatasetInfo, preprocessor: Preprocessor, norm_json: dict[str, Any],
                      dev: torch.device, amp: torch.dtype | None) -> _Setup:
    """ParametricDQN / ParametricCQL on a table of candidate sets: items through their own Preprocessor (the
    action normalization in the table's metadata); the export scores candidate sets
    (:mod:`batchrl.serving.parametric`)."""
    action_normalization = from_json_dict(info.action_normalization, where=f"{info.uri} action_normalization")
    action_ids = [int(a) for a in info.action_names]
    item_preprocessor = Preprocessor(action_normalization, action_ids).to(dev)
    trainer = build_trainer(config.model, preprocessor.output_dim, item_preprocessor.output_dim, device=dev,
                            amp_dtype=amp)

    def evaluate(eval_batch: Batch, epoch: int) -> dict[str, Any]:
        return {"eval": {name: float(value) for name, value in trainer.evaluate(eval_batch).items()}}

    def export(output: str, metadata: dict[str, Any]) -> dict[str, str]:
        uri = f"{output}/{MODEL_FILE}"
        export_parametric_model(uri, preprocessor, item_preprocessor, trainer.q_network, info.feature_ids, action_ids,
                                norm_json, info.action_normalization or {},
                                {**metadata, "output": trainer.scores, "num_candidates": info.num_candidates})
        return {"model": uri}

    return _Setup(trainer, None, parametric_preprocess_fn(preprocessor, item_preprocessor), evaluate, export)


def _restore(setup: _Setup, output: str, fingerprint: str, resume: bool) -> tuple[LoopState, str | None]:
    """With ``resume`` and a checkpoint under ``output``: the trainers, loop state and RNG state restored
    from the latest one (its config fingerprint must match); otherwise a fresh state, and the checkpoints
    and TensorBoard logs of an earlier run removed."""
    checkpoints = list_checkpoints(output)
    if resume and checkpoints:
        epoch, uri = max(checkpoints.items())
        saved = load_checkpoint(uri)
        if saved.get("fingerprint") != fingerprint:
            raise BatchRLError("the checkpoint was written with a different config (model, seed or tables)",
                               where=uri, fix="resume with the config of the interrupted run, or start "
                               "without --resume (which discards its checkpoints)")
        setup.trainer.load_state_dict(saved["trainer"])
        if setup.cpe is not None:
            setup.cpe.load_state_dict(saved["cpe"])
        state = LoopState(epoch=int(saved["epoch"]), global_step=int(saved["global_step"]),
                          history=list(saved["history"]))
        restore_rng_state(saved["rng"])
        log.info("resuming after epoch %d from %s", epoch, uri)
        return state, uri
    if resume:
        log.warning("--resume: no checkpoint under %s; starting from the beginning", output)
    for stale in ("checkpoints", "tensorboard"):
        if storage.exists(f"{output}/{stale}"):
            log.info("removing %s/%s of a previous run", output, stale)
            storage.delete(f"{output}/{stale}")
    return LoopState(), None


def _run(config: WorkflowConfig, setup: _Setup, loader: TransitionLoader, eval_batch: Batch, output: str,
         state: LoopState, resumed: bool) -> TrainingLoop:
    """The training loop from ``state`` to ``config.num_epochs``, checkpointing as configured."""
    trainer, cpe = setup.trainer, setup.cpe
    fingerprint = config_fingerprint(config)

    def save(epoch: int, loop_state: LoopState) -> None:
        save_checkpoint(output, epoch, {
            "epoch": epoch, "global_step": loop_state.global_step, "history": loop_state.history,
            "trainer": trainer.state_dict(), "cpe": cpe.state_dict() if cpe else None, "rng": rng_state(),
            "fingerprint": fingerprint, "algorithm": config.model.name})
        if config.keep_checkpoints is not None:
            prune_checkpoints(output, config.keep_checkpoints)

    tensorboard = TensorBoardLog(output, purge_step=state.global_step + 1 if resumed else None)
    loop = TrainingLoop(trainers=[trainer] + ([cpe] if cpe else []), loader=loader,
                        evaluate=lambda epoch: setup.evaluate(eval_batch, epoch), save=save,
                        learning_rate=lambda: trainer.learning_rate, tensorboard=tensorboard,
                        num_epochs=config.num_epochs, checkpoint_every=config.checkpoint_every, where=output)
    threads = torch.get_num_threads()
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        loop.run(state)
    finally:
        torch.set_num_threads(threads)
        tensorboard.close()
    return loop


def _select_checkpoint(config: WorkflowConfig, setup: _Setup, state: LoopState, output: str) -> int | None:
    """With ``checkpoint_selection``: the trainers restored from the chosen epoch's checkpoint
    (:mod:`batchrl.training.selection`); the chosen epoch, or None without selection."""
    if config.checkpoint_selection is None:
        return None
    checkpoints = list_checkpoints(output)
    epoch, score = select_epoch(state.history, set(checkpoints), config.checkpoint_selection, output)
    if epoch != state.epoch:
        saved = load_checkpoint(checkpoints[epoch])
        setup.trainer.load_state_dict(saved["trainer"])
        if setup.cpe is not None:
            setup.cpe.load_state_dict(saved["cpe"])
    log.info("checkpoint_selection: exporting epoch %d of %d (%s %s %.4g)", epoch, state.epoch,
             config.checkpoint_selection.estimator, config.checkpoint_selection.statistic, score)
    return epoch


@dataclass(frozen=True, kw_only=True)
class TrainResult(StageResult):
    """What :func:`train` wrote (non-finite numbers as ``None``); the rest is in ``training_summary.json``."""

    output: str
    algorithm: str
    device: str
    epochs: int
    final_losses: dict[str, float | None]  # the last epoch's mean training terms
    eval_td_loss: float | None
    transitions_per_s: float | None
    paths: dict[str, str]  # what was written: models, checkpoints, tensorboard, summary
    resumed_from: str | None
    cpe: dict[str, Any]  # the last epoch's CPE estimates (discrete models with CPE in training)
    selected_epoch: int | None = when_set()  # the exported epoch, with checkpoint_selection
    # in training_summary.json and the KFP model artifact's metadata, not in the printed summary
    seed: int = not_printed()
    gamma: float = not_printed()
    feature_ids: list[int] = not_printed()
    action_names: list[str] = not_printed()
    train_rows: int = not_printed()
    eval_rows: int = not_printed()

    METADATA: ClassVar[tuple[str, ...]] = ("algorithm", "device", "epochs", "seed", "action_names", "feature_ids",
                                           "train_rows", "eval_rows", "gamma")
    HEADLINE: ClassVar[tuple[str, ...]] = ("epochs", "transitions_per_s", "eval_td_loss")


def _build_setup(config: WorkflowConfig, info: DatasetInfo, normalization: str, dev: torch.device,
                 amp: torch.dtype | None) -> tuple[_Setup, Preprocessor]:
    """The seeded, untrained trainers of ``config`` for a table described by ``info``, and its preprocessor."""
    norm_json = storage.read_json(normalization)
    preprocessor = Preprocessor(read_normalization(normalization), info.feature_ids).to(dev)
    torch.manual_seed(config.seed)
    setup = (_parametric_setup if config.model.parametric else _continuous_setup if config.model.continuous
             else _discrete_setup)(config, info, preprocessor, norm_json, dev, amp)
    return setup, preprocessor


def export_checkpoint(config: WorkflowConfig, train: str, normalization: str, model_dir: str, epoch: int,
                      output: str, device: str | None = None) -> dict[str, str]:
    """Export the policy (and CPE models) of epoch ``epoch``'s checkpoint of the training run that wrote
    ``model_dir`` (with ``config``, ``train`` and ``normalization`` as that run had them) into ``output``:
    an earlier epoch's model, e.g. to compare it with the exported one. Returns {artifact: uri}."""
    checkpoints = list_checkpoints(model_dir.rstrip("/"))
    if epoch not in checkpoints:
        raise BatchRLError(f"no checkpoint of epoch {epoch}", where=model_dir,
                           fix=f"choose one of the kept epochs {sorted(checkpoints)} (checkpoint_every, keep_checkpoints)")
    dev = resolve_device(device or config.device)
    amp = None if config.model.continuous else amp_dtype(dev)
    setup, _ = _build_setup(config, dataset_info(train), normalization, dev, amp)
    saved = load_checkpoint(checkpoints[epoch])
    setup.trainer.load_state_dict(saved["trainer"])
    if setup.cpe is not None:
        setup.cpe.load_state_dict(saved["cpe"])
    return setup.export(output.rstrip("/"), _model_metadata(config, epoch, exported_epoch=epoch))


def _model_metadata(config: WorkflowConfig, epochs: int, **extra: Any) -> dict[str, Any]:
    """What an exported model carries about its training."""
    rl = config.model.value.trainer_param.rl
    return {"algorithm": config.model.name, "gamma": rl.gamma, "temperature": rl.temperature,
            "softmax_policy": rl.softmax_policy, "epochs": epochs, "seed": config.seed,
            "batchrl_version": __version__, **extra}


def train(config: WorkflowConfig, train: str, eval: str, normalization: str, output: str,
          device: str | None = None, resume: bool = False) -> TrainResult:
    """Train the configured model on ``train``, evaluate on ``eval`` each epoch, write ``output``."""
    started = time.perf_counter()
    output = output.rstrip("/")
    params = config.model.value.trainer_param
    algorithm = config.model.name
    dev = resolve_device(device or config.device)
    amp = None if config.model.continuous else amp_dtype(dev)  # the actor-critic trainers run in float32
    info, eval_info = dataset_info(train), dataset_info(eval)
    _check_tables(config, info, eval_info)
    setup, preprocessor = _build_setup(config, info, normalization, dev, amp)
    loader = TransitionLoader(train, config.batch_size, seed=config.seed, device=dev, transform=setup.transform)
    eval_batch = setup.transform(read_eval_batch(eval, eval_info).to(dev))
    log.info("train: %s on %s, %d training rows (%s), %d eval rows, %d features -> %d inputs, actions %s",
             algorithm, dev, loader.num_rows, "resident" if loader.resident else "streaming", len(eval_batch),
             info.num_features, preprocessor.output_dim, info.action_names)
    if config.checkpoint_selection is not None and setup.cpe is None:
        raise BatchRLError("checkpoint_selection chooses by the CPE estimates of training, which this model does "
                           "not compute", where=algorithm, fix="use a discrete model with "
                           "eval_parameters.calc_cpe_in_training: true, or drop checkpoint_selection")
    state, resumed_from = _restore(setup, output, config_fingerprint(config), resume)
    loop = _run(config, setup, loader, eval_batch, output, state, resumed_from is not None)
    selected = _select_checkpoint(config, setup, state, output)

    metadata = _model_metadata(config, state.epoch, **({"selected_epoch": selected} if selected else {}))
    paths = {**setup.export(output, metadata), "checkpoints": f"{output}/checkpoints",
             "tensorboard": f"{output}/tensorboard", "summary": f"{output}/{SUMMARY_FILE}"}
    final = state.history[-1] if state.history else {}
    rate = loop.train_rows / loop.train_seconds if loop.train_seconds > 0 else None
    summary = {
        "algorithm": algorithm, "device": str(dev), "mixed_precision": str(amp).replace("torch.", "") if amp else None,
        "epochs": state.epoch, "global_step": state.global_step,
        "final_losses": final.get("train", {}), "eval_td_loss": final.get("eval", {}).get("td_loss"),
        "final": final, "per_epoch": state.history,
        "transitions_per_s": round(rate, 1) if rate else None,
        "train_rows": loader.num_rows, "eval_rows": len(eval_batch), "resident": loader.resident,
        "gamma": params.rl.gamma, "temperature": params.rl.temperature, "cpe_in_training": setup.cpe is not None,
        "feature_ids": info.feature_ids, "action_names": info.action_names,
        "action_space": "parametric" if info.parametric else "continuous" if info.continuous else "discrete",
        "inputs": {"train": train, "eval": eval, "normalization": normalization},
        "resumed_from": resumed_from, "paths": paths, "selected_epoch": selected,
        "config": config.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - started, 2),
    }
    storage.write_json(paths["summary"], summary)
    log.info("train: wrote %s (%d epochs)", output, state.epoch)
    safe = storage.json_safe
    return TrainResult(
        output=output, algorithm=algorithm, device=str(dev), epochs=state.epoch,
        final_losses=safe(summary["final_losses"]), eval_td_loss=safe(summary["eval_td_loss"]),
        transitions_per_s=summary["transitions_per_s"], paths=paths, resumed_from=resumed_from,
        cpe=safe(final.get("cpe", {})), selected_epoch=selected, seed=config.seed, gamma=params.rl.gamma, feature_ids=info.feature_ids,
        action_names=info.action_names, train_rows=loader.num_rows, eval_rows=len(eval_batch))
