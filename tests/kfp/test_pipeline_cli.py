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
    """--registry covers every image the pipeline names: the step images and the Spark image of the
    SparkApplications; no reference to the unpublished default registry is left anywhere."""
    from batchrl.kfp.images import DEFAULT_IMAGES, REGISTRY

    target = tmp_path / "out" / "p.yaml"
    code, out, err = cli("pipeline", "compile", "--output", target, "--registry", "registry.example/team/",
                         "--image-tag", "1.2.3")
    assert code == 0, err
    assert json.loads(out)["images"] == {"runtime": "registry.example/team/batchrl-runtime:1.2.3",
                                         "trainer": "registry.example/team/batchrl-trainer:1.2.3",
                                         "spark": "registry.example/team/batchrl-spark:1.2.3"}
    text = target.read_text()
    spec = next(yaml.safe_load_all(text))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/team/batchrl-runtime:1.2.3", "registry.example/team/batchrl-trainer:1.2.3"}
    spark = spec["root"]["inputDefinitions"]["parameters"]["spark_kubernetes"]["defaultValue"]
    assert spark == {"image": "registry.example/team/batchrl-spark:1.2.3"}
    assert REGISTRY not in text and not any(image in text for image in DEFAULT_IMAGES.references())
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]


def test_compile_with_a_pipeline_root(tmp_path, cli):
    target = tmp_path / "p.yaml"
    code, out, err = cli("pipeline", "compile", "--output", target, "--pipeline-root", "s3://my-bucket/kfp")
    assert code == 0, err
    assert next(yaml.safe_load_all(target.read_text()))["defaultPipelineRoot"] == "s3://my-bucket/kfp"
    assert json.loads(out)["pipeline_root"] == "s3://my-bucket/kfp"
    code, out, err = cli("pipeline", "compile", "--output", tmp_path / "q.yaml", "--pipeline-root", "/local/dir")
    assert code == 2 and out == "" and "s3://BUCKET/PREFIX" in err
    assert not (tmp_path / "q.yaml").exists()


def test_compile_outside_the_repository_says_where_to_run(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("pipeline", "compile")
    assert code == 2 and out == ""
    assert "no pipelines/ folder here" in err and "--output" in err
