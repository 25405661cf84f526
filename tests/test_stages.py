"""One stage graph (issue 18): for every shipped workflow config, the compiled KFP pipeline hands each
component the options ``batchrl run`` gives the stage (``batchrl.stages``), so defaults and wiring cannot
drift between the two.

The pipeline side is read from the checked-in ``pipelines/batch_rl.yaml`` (kept equal to a fresh compile by
``tests/test_kfp_golden.py``): the pipeline's arguments (its compiled defaults, with the config's mirrored
parameters from ``config_defaults``) are followed through the DAG's ``componentInputParameter`` /
``runtimeValue`` wiring (KFP's pipeline spec, kubeflow/pipelines api/v2alpha1/pipeline_spec.proto, kfp
2.x) to each executor task, whose component function is then called with those parameters; the stage
function it calls is replaced by one that captures the options the component built.
"""

from __future__ import annotations

import inspect
import re
from importlib import resources
from types import SimpleNamespace

import pytest
import yaml

from batchrl.config import WorkflowConfig, load_config, parse_config
from batchrl.kfp.components import STEPS
from batchrl.kfp.pipeline import config_defaults
from batchrl.stages import SPECS, stage_options

SHIPPED = sorted(p.name for p in (resources.files("batchrl") / "configs").iterdir() if p.name.endswith(".yaml"))
#: Component -> (module, function) of the stage function it calls.
STAGE_FUNCTIONS = {
    "generate": ("batchrl.data.gym_logging", "generate"),
    "timeline": ("batchrl.data.timeline", "timeline"),
    "normalize": ("batchrl.data.normalize", "normalize"),
    "normalize_actions": ("batchrl.data.normalize", "normalize_actions"),
    "prepare": ("batchrl.data.prepare", "prepare"),
    "train": ("batchrl.training.train", "train"),
    "evaluate": ("batchrl.evaluation.evaluate", "evaluate"),
}


class Captured(Exception):
    pass


def _pipeline_spec() -> dict:
    with open("pipelines/batch_rl.yaml") as fh:
        return next(yaml.safe_load_all(fh))


def _executor_tasks(spec: dict, arguments: dict) -> list[tuple[str, dict, dict]]:
    """(component name, parameter values, task) of every executor task reached from the root DAG."""
    found = []

    def walk(component: dict, scope: dict) -> None:
        for task in component["dag"]["tasks"].values():
            params = {}
            for key, value in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in value:
                    params[key] = scope[value["componentInputParameter"]]
                elif "runtimeValue" in value:
                    params[key] = value["runtimeValue"]["constant"]
            ref = task["componentRef"]["name"]
            child = spec["components"][ref]
            if "dag" in child:
                walk(child, params)
            else:
                found.append((re.sub(r"-\d+$", "", ref.removeprefix("comp-")).replace("-", "_"), params, task))

    walk(spec["root"], arguments)
    return found


def _component_options(name: str, params: dict, task: dict, continuous: bool, monkeypatch) -> object:
    """The options the component ``name`` builds from ``params`` (its stage function is not run)."""
    import importlib

    def capture(*args, **kwargs):
        options = [a for a in (*args, *kwargs.values()) if hasattr(a, "model_dump")]
        raise Captured(options[0])

    module, function = STAGE_FUNCTIONS[name]
    monkeypatch.setattr(importlib.import_module(module), function, capture)
    monkeypatch.setattr("batchrl.data.normalize.has_continuous_actions", lambda path: continuous)
    func = STEPS[name][0]
    artifacts = set(task.get("inputs", {}).get("artifacts", {}))
    kwargs = {}
    for param_name, param in inspect.signature(func).parameters.items():
        if param_name in params:
            kwargs[param_name] = params[param_name]
        elif param_name in artifacts or param.default is inspect.Parameter.empty:
            kwargs[param_name] = SimpleNamespace(path=f"/unused/{param_name}", uri=f"/unused/{param_name}",
                                                 metadata={})
    with pytest.raises(Captured) as captured:
        func(**kwargs)
    return captured.value.args[0]


def _shipped(config_name: str) -> WorkflowConfig:
    with resources.as_file(resources.files("batchrl") / "configs" / config_name) as path:
        return load_config(path)


@pytest.mark.parametrize("config_name", SHIPPED)
def test_the_pipeline_gives_each_stage_the_options_batchrl_run_gives(config_name, monkeypatch):
    _check_stage_options(_shipped(config_name), config_name, monkeypatch)


def test_multi_step_configs_get_multi_step_timelines_and_tables(monkeypatch):
    """``rl.multi_steps``: both ``batchrl run`` and the pipeline build a k-step timeline and k-step rows
    discounted by the config's gamma (ReAgent's workflow passed multi_steps to its timeline query)."""
    data = _shipped("cartpole_dqn_offline.yaml").model_dump(mode="json", exclude_unset=True)
    data["model"]["DiscreteDQN"]["trainer_param"]["rl"].update(multi_steps=3, gamma=0.9)
    config = parse_config(data)
    options = stage_options(config)
    assert options["timeline"].steps == 3
    assert (options["prepare"].multi_steps, options["prepare"].gamma) == (3, 0.9)
    _check_stage_options(config, "cartpole_dqn_offline.yaml with multi_steps 3", monkeypatch)


def _check_stage_options(config: WorkflowConfig, config_name: str, monkeypatch) -> None:
    config_json = config.model_dump(mode="json", exclude_unset=True)
    spec = _pipeline_spec()
    arguments = {name: value.get("defaultValue")
                 for name, value in spec["root"]["inputDefinitions"]["parameters"].items()}
    arguments.update(config_defaults(config_json), workflow_config=config_json)
    expected = stage_options(config)

    compared = set()
    for name, params, task in _executor_tasks(spec, arguments):
        if name not in SPECS or (name == "timeline" and "logged" not in task.get("inputs", {}).get("artifacts", {})):
            continue  # platform steps; the logged-data branch's timeline (no logged input without input_uri)
        got = _component_options(name, params, task, config.model.continuous, monkeypatch)
        assert got.model_dump() == expected[name].model_dump(), f"{config_name}: {name}"
        compared.add(name)
    assert compared == set(expected), "every stage with options is in the pipeline"


def test_the_compiled_defaults_are_the_default_configs():
    """The pipeline's compiled defaults are the mirrored parameters of its default config."""
    from batchrl.kfp.pipeline import default_workflow_config

    parameters = _pipeline_spec()["root"]["inputDefinitions"]["parameters"]
    default = default_workflow_config()
    for name, value in config_defaults(default).items():
        assert parameters[name]["defaultValue"] == value, name
    assert parameters["workflow_config"]["defaultValue"] == default
