"""`batchrl pipeline compile`: goldens under a root, one pipeline file, other images."""

from __future__ import annotations

import json

import yaml
from kfp import components

from batchrl.kfp.components import STEPS


def test_compile_regenerates_every_golden_under_a_root(tmp_path, cli):
    (tmp_path / "pipelines").mkdir()
    code, out, err = cli("pipeline", "compile", "--root", tmp_path)
    assert code == 0, err
    written = json.loads(out)["written"]
    assert len(written) == 1 + len(STEPS)
    assert (tmp_path / "pipelines" / "batch_rl.yaml").is_file()
    for name in STEPS:
        component = components.load_component_from_file(str(tmp_path / "components" / name / "component.yaml"))
        assert component.name == name.replace("_", "-")


def test_compile_output_writes_only_the_pipeline_for_other_images(tmp_path, cli):
    target = tmp_path / "out" / "p.yaml"
    code, out, err = cli("pipeline", "compile", "--output", target, "--registry", "registry.example/team/",
                         "--image-tag", "1.2.3")
    assert code == 0, err
    assert json.loads(out)["images"] == {"runtime": "registry.example/team/batchrl-runtime:1.2.3",
                                         "trainer": "registry.example/team/batchrl-trainer:1.2.3"}
    spec = next(yaml.safe_load_all(target.read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/team/batchrl-runtime:1.2.3", "registry.example/team/batchrl-trainer:1.2.3"}
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]


def test_compile_outside_the_repository_says_where_to_run(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("pipeline", "compile")
    assert code == 2 and out == ""
    assert "no pipelines/ folder here" in err and "--output" in err
