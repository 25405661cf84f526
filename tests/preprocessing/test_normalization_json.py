"""Normalization parameters and their ReAgent-compatible JSON (spec section 4)."""

from __future__ import annotations

import json

import pytest

from batchrl import storage
from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import (
    FIELDS,
    NormalizationParameters,
    from_json_dict,
    read_normalization,
    to_json_dict,
    write_normalization,
)

NORM = {
    10: NormalizationParameters(feature_type="ENUM", possible_values=[0.0, 1000.0, 2000.0]),
    2: NormalizationParameters(feature_type="CONTINUOUS", mean=0.567, stddev=1.0, min_value=-0.146,
                               max_value=2.177),
    0: NormalizationParameters(feature_type="BOXCOX", boxcox_lambda=0.25, boxcox_shift=1.5, mean=0.1,
                               stddev=0.9),
    7: NormalizationParameters(feature_type="QUANTILE", quantiles=[0.0, 0.5, 7.0], min_value=0.0,
                               max_value=7.0),
    3: NormalizationParameters(feature_type="BINARY"),
}


def test_round_trip_in_both_encodings(tmp_path):
    uri = str(tmp_path / "norm.json")
    write_normalization(uri, NORM)
    on_disk = json.loads(open(uri).read())
    # ReAgent's form: keys are strings, values JSON-encoded strings with all nine fields
    assert list(on_disk) == ["0", "2", "3", "7", "10"]
    assert all(isinstance(v, str) for v in on_disk.values())
    assert list(json.loads(on_disk["2"])) == list(FIELDS)
    read = read_normalization(uri)
    assert list(read) == [0, 2, 3, 7, 10]
    assert read == NORM
    nested = str(tmp_path / "nested.json")
    storage.write_json(nested, to_json_dict(NORM, double_encoded=False))
    assert read_normalization(nested) == NORM
    assert from_json_dict(to_json_dict(NORM)) == from_json_dict(to_json_dict(NORM, double_encoded=False))


def test_reads_reagent_file_with_partial_fields():
    reagent = {"0": json.dumps({"feature_type": "CONTINUOUS", "mean": 0.567, "stddev": 1.0,
                                "min_value": -0.146, "max_value": 2.177, "boxcox_lambda": None,
                                "boxcox_shift": None, "possible_values": None, "quantiles": None}),
               "1": {"feature_type": "PROBABILITY"}}
    norm = from_json_dict(reagent)
    assert norm[0].mean == pytest.approx(0.567) and norm[0].boxcox_lambda is None
    assert norm[1].feature_type == "PROBABILITY"


@pytest.mark.parametrize("entry, message", [
    ({"feature_type": "CONTINUOUS", "mean": 1.0}, "feature 5: .*CONTINUOUS needs stddev"),
    ({"feature_type": "SPLINE"}, "feature 5: .*feature_type"),
    ({"feature_type": "BINARY", "colour": 1}, "feature 5: .*colour"),
    ({"feature_type": "QUANTILE", "quantiles": [3.0, 1.0]}, "feature 5: .*non-decreasing"),
    ({"feature_type": "CONTINUOUS", "mean": 0.0, "stddev": 0.0}, "feature 5: .*stddev must be > 0"),
    ("{not json", "feature 5: its parameters are not valid JSON"),
])
def test_bad_entries_name_the_feature(entry, message):
    with pytest.raises(BatchRLError, match=message):
        from_json_dict({"5": entry})


def test_bad_files(tmp_path):
    with pytest.raises(BatchRLError, match="feature id 'x' is not an integer"):
        from_json_dict({"x": {"feature_type": "BINARY"}})
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(BatchRLError, match="JSON object keyed by feature id"):
        read_normalization(str(path))
    with pytest.raises(BatchRLError, match="file not found"):
        read_normalization(str(tmp_path / "missing.json"))
