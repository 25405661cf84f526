"""The Preprocessor (spec section 5): worked values per type, keyed by feature id, TorchScript parity."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from batchrl.errors import BatchRLError
from batchrl.preprocessing.normalization import NormalizationParameters as P
from batchrl.preprocessing.preprocessor import MAX_FEATURE_VALUE, Preprocessor


def _apply(params: P, xs: list[float]) -> np.ndarray:
    """Run one feature's values through a one-feature preprocessor (also scripted); rows x outputs."""
    module = Preprocessor({4: params}, [4])
    values = torch.tensor(xs, dtype=torch.float32).reshape(-1, 1)
    presence = torch.ones_like(values)
    eager = module(values, presence)
    scripted = torch.jit.script(module)(values, presence)
    torch.testing.assert_close(eager, scripted)
    return eager.numpy()


def test_worked_values_of_the_spec():
    assert _apply(P(feature_type="PROBABILITY"), [0.9])[0, 0] == pytest.approx(2.1972, abs=1e-4)
    cont = _apply(P(feature_type="CONTINUOUS", mean=2.0, stddev=4.0), [10.0, 100.0])
    assert cont[:, 0] == pytest.approx([2.0, 11.513], abs=1e-5)
    boxcox = P(feature_type="BOXCOX", boxcox_lambda=0.5, boxcox_shift=1.0, mean=0.0, stddev=1.0)
    assert _apply(boxcox, [3.0])[0, 0] == pytest.approx(2.0, abs=1e-6)
    enum = _apply(P(feature_type="ENUM", possible_values=[0, 1000, 2000]), [1000.0])
    assert enum.tolist() == [[0.0, 1.0, 0.0]]
    quantile = _apply(P(feature_type="QUANTILE", quantiles=[0, 1, 2, 3, 4]), [2.5])
    assert quantile[0, 0] == pytest.approx(0.625, abs=1e-6)


def test_binary_probability_clip_log_and_identity_types():
    assert _apply(P(feature_type="BINARY"), [0.0, 1.0, -3.0, 0.2])[:, 0].tolist() == [0, 1, 1, 1]
    prob = _apply(P(feature_type="PROBABILITY"), [0.0, 1.0, 0.5, 0.1])[:, 0]
    eps = 1e-5
    assert prob == pytest.approx([math.log(eps / (1 - eps)), math.log((1 - eps) / eps), 0.0, math.log(1 / 9)],
                                 abs=2e-3)
    clip_log = _apply(P(feature_type="CLIP_LOG"), [math.e, 1e-5, 0.0, -5.0])[:, 0]
    # ln(1e-6) = -13.8 is then clamped to -11.513
    assert clip_log == pytest.approx([1.0, math.log(1e-5), -MAX_FEATURE_VALUE, -MAX_FEATURE_VALUE], abs=1e-5)
    # identity types; DO_NOT_PREPROCESS is not clamped, DISCRETE_ACTION is (a no-op on 0/1 values)
    assert _apply(P(feature_type="DO_NOT_PREPROCESS"), [123.5, -40.0])[:, 0].tolist() == [123.5, -40.0]
    assert _apply(P(feature_type="DISCRETE_ACTION"), [0.0, 1.0])[:, 0].tolist() == [0.0, 1.0]


def test_boxcox_lambda_zero_is_log_then_standardized():
    params = P(feature_type="BOXCOX", boxcox_lambda=0.0, boxcox_shift=2.0, mean=1.0, stddev=0.5)
    out = _apply(params, [math.e**3 - 2.0, -10.0])[:, 0]
    assert out[0] == pytest.approx((3.0 - 1.0) / 0.5, abs=1e-4)
    # x + shift below the floor uses 1e-6, then the clamp
    assert out[1] == pytest.approx(-MAX_FEATURE_VALUE)


def test_continuous_action_maps_range_to_open_unit_interval():
    out = _apply(P(feature_type="CONTINUOUS_ACTION", min_value=-2.0, max_value=6.0), [-2.0, 2.0, 6.0])[:, 0]
    assert out == pytest.approx([-1.0, 0.0, 1.0], abs=1e-5)
    assert -1.0 < out[0] and out[2] < 1.0


def test_quantile_is_piecewise_linear_and_bounded():
    params = P(feature_type="QUANTILE", quantiles=[0.0, 1.0, 10.0, 100.0])
    out = _apply(params, [-5.0, 0.0, 0.5, 1.0, 5.5, 10.0, 55.0, 100.0, 1e6])[:, 0]
    assert out == pytest.approx([0.0, 0.0, 1 / 6, 1 / 3, 0.5, 2 / 3, 5 / 6, 1.0, 1.0], abs=1e-6)


def test_enum_unknown_value_is_all_zeros_and_absent_features_are_zero():
    norm = {0: P(feature_type="ENUM", possible_values=[1, 2]),
            1: P(feature_type="CONTINUOUS", mean=5.0, stddev=1.0),
            2: P(feature_type="PROBABILITY")}
    module = Preprocessor(norm, [0, 1, 2])
    values = torch.tensor([[3.0, 7.0, 0.0], [2.0, 0.0, 0.0]])
    presence = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    out = module(values, presence)
    assert module.output_dim == 4 and module.output_feature_ids == [0, 0, 1, 2]
    assert out.tolist() == [[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


def _reference(params: P, x: float) -> list[float]:
    """Straightforward per-feature transform used to check the vectorized module."""
    t = params.feature_type.value
    clamp = lambda v: min(max(v, -MAX_FEATURE_VALUE), MAX_FEATURE_VALUE)  # noqa: E731
    if t == "CONTINUOUS":
        return [clamp((x - params.mean) / params.stddev)]
    if t == "BOXCOX":
        y = max(x + params.boxcox_shift, 1e-6)
        return [clamp(((y ** params.boxcox_lambda - 1) / params.boxcox_lambda - params.mean) / params.stddev)]
    if t == "ENUM":
        return [1.0 if x == v else 0.0 for v in params.possible_values]
    if t == "BINARY":
        return [0.0 if x == 0 else 1.0]
    if t == "PROBABILITY":
        p = min(max(x, 1e-5), 1 - 1e-5)
        return [math.log(p / (1 - p))]
    raise AssertionError(t)


def test_interleaved_types_get_their_own_parameters():
    rng = np.random.default_rng(0)
    kinds = [
        P(feature_type="CONTINUOUS", mean=10.0, stddev=2.0),
        P(feature_type="ENUM", possible_values=[3, 5, 7]),
        P(feature_type="BOXCOX", boxcox_lambda=0.3, boxcox_shift=0.5, mean=0.2, stddev=1.5),
        P(feature_type="CONTINUOUS", mean=-4.0, stddev=0.25),
        P(feature_type="BINARY"),
        P(feature_type="ENUM", possible_values=[0, 1, 2, 9]),
        P(feature_type="PROBABILITY"),
        P(feature_type="BOXCOX", boxcox_lambda=-0.7, boxcox_shift=1.0, mean=-0.1, stddev=0.3),
    ]
    ids = [2, 3, 5, 8, 13, 21, 34, 55]  # types interleave by id
    norm = dict(zip(reversed(ids), reversed(kinds), strict=True))  # insertion order must not matter
    module = Preprocessor(norm, ids)
    rows = []
    for _ in range(16):
        rows.append([float(rng.normal(10, 2)), float(rng.choice([3, 5, 7, 4])), float(rng.exponential()),
                     float(rng.normal(-4, 0.3)), float(rng.integers(0, 2)), float(rng.choice([0, 1, 2, 9])),
                     float(rng.uniform()), float(rng.exponential())])
    values = torch.tensor(rows, dtype=torch.float32)
    out = module(values, torch.ones_like(values)).numpy()
    expected = [[v for j, x in enumerate(row) for v in _reference(kinds[j], float(np.float32(x)))] for row in rows]
    np.testing.assert_allclose(out, np.array(expected), rtol=1e-4, atol=1e-4)


def test_scripted_equals_eager_and_survives_save_load():
    norm = {0: P(feature_type="CONTINUOUS", mean=0.5, stddev=2.0),
            1: P(feature_type="QUANTILE", quantiles=[-1.0, 0.0, 0.5, 3.0]),
            2: P(feature_type="ENUM", possible_values=[0, 1, 2]),
            3: P(feature_type="BOXCOX", boxcox_lambda=1.7, boxcox_shift=3.0, mean=1.0, stddev=4.0),
            4: P(feature_type="CLIP_LOG"),
            5: P(feature_type="CONTINUOUS_ACTION", min_value=0.0, max_value=10.0),
            6: P(feature_type="DO_NOT_PREPROCESS")}
    module = Preprocessor(norm)
    scripted = torch.jit.script(module)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(64, 7, generator=gen) * 3
    values[:, 2] = torch.randint(0, 4, (64,), generator=gen).float()
    presence = (torch.rand(64, 7, generator=gen) > 0.2).float()
    eager = module(values, presence)
    assert eager.shape == (64, module.output_dim) and module.output_dim == 9
    torch.testing.assert_close(scripted(values, presence), eager, rtol=0, atol=0)
    torch.testing.assert_close(loaded(values, presence), eager, rtol=0, atol=0)
    assert loaded.feature_ids == [0, 1, 2, 3, 4, 5, 6] and loaded.output_dim == 9


def test_bad_construction_and_bad_input_are_clear():
    norm = {1: P(feature_type="BINARY"), 2: P(feature_type="BINARY")}
    with pytest.raises(BatchRLError, match=r"no normalization parameters for feature ids \[3\]"):
        Preprocessor(norm, [1, 3])
    with pytest.raises(BatchRLError, match="ascending"):
        Preprocessor(norm, [2, 1])
    scripted = torch.jit.script(Preprocessor(norm, [1, 2]))
    with pytest.raises(Exception, match=r"expected values of shape \[B, 2\]"):
        scripted(torch.zeros(3, 4), torch.zeros(3, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    norm = {0: P(feature_type="CONTINUOUS", mean=0.5, stddev=2.0),
            1: P(feature_type="QUANTILE", quantiles=[-1.0, 0.0, 0.5, 3.0]),
            2: P(feature_type="ENUM", possible_values=[0, 1, 2]),
            3: P(feature_type="BOXCOX", boxcox_lambda=0.3, boxcox_shift=3.0, mean=1.0, stddev=4.0)}
    module = torch.jit.script(Preprocessor(norm))
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(256, 4, generator=gen)
    values[:, 2] = torch.randint(0, 4, (256,), generator=gen).float()
    presence = (torch.rand(256, 4, generator=gen) > 0.1).float()
    cpu = module(values, presence)
    cuda = module.to("cuda")(values.cuda(), presence.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-5, atol=1e-5)
