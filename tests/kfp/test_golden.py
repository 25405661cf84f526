"""The checked-in pipeline and component YAML are what the package compiles to (regenerate them with
``batchrl pipeline compile``)."""

from __future__ import annotations

from pathlib import Path

from batchrl.kfp.compile import COMPONENTS_DIR, PIPELINE_FILE, compile_all, component_file, masked
from batchrl.kfp.components import STEPS

ROOT = Path(__file__).resolve().parents[2]
FIX = "out of date: run `batchrl pipeline compile` in the repository root and commit the YAML"


def test_every_checked_in_yaml_matches_a_fresh_compile(tmp_path):
    written = compile_all(tmp_path)
    assert len(written) == 1 + len(STEPS)
    for fresh in written:
        relative = fresh.relative_to(tmp_path)
        checked_in = ROOT / relative
        assert checked_in.is_file(), f"{relative} is missing: {FIX}"
        assert masked(checked_in.read_text()) == masked(fresh.read_text()), f"{relative} is {FIX}"


def test_no_stale_component_folders():
    folders = {path.parent.name for path in (ROOT / COMPONENTS_DIR).glob("*/component.yaml")}
    assert folders == set(STEPS)
    assert component_file(ROOT, "train").is_file()
    assert (ROOT / PIPELINE_FILE).is_file()


def test_masking_hides_only_the_sdk_version():
    text = "a: 1\nsdkVersion: kfp-2.17.3\nb: 2"
    assert masked(text) == "a: 1\nb: 2"
    assert masked(text) != masked(text.replace("b: 2", "b: 3"))
