"""Type and parameter identification from samples (spec section 4), on 10000-sample synthetic features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from batchrl.errors import BatchRLError
from batchrl.preprocessing.identify import IdentifyOptions, NotIdentified, identify_feature

N = 10_000


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


def test_bernoulli_and_constant_are_binary(rng):
    assert identify_feature(rng.binomial(1, 0.3, N).astype(float)).feature_type == "BINARY"
    assert identify_feature(np.full(N, 7.25)).feature_type == "BINARY"


def test_clipped_beta_is_probability(rng):
    params = identify_feature(np.clip(rng.beta(2.0, 5.0, N), 0.0, 1.0))
    assert params.feature_type == "PROBABILITY"


def test_scaled_randint_is_enum_with_sorted_values(rng):
    params = identify_feature(rng.integers(0, 10, N) * 1000.0)
    assert params.feature_type == "ENUM"
    assert params.possible_values == tuple(float(v) for v in range(0, 10_000, 1000))
    # one more distinct value than allowed: CONTINUOUS
    assert identify_feature(rng.integers(0, 11, N) * 1000.0).feature_type == "CONTINUOUS"
    assert identify_feature(rng.integers(0, 11, N) * 1000.0,
                            IdentifyOptions(max_unique_enum_values=11)).feature_type == "ENUM"
    # negative or non-integral values are not enums
    assert identify_feature(rng.integers(-2, 3, N).astype(float)).feature_type == "CONTINUOUS"
    assert identify_feature(rng.integers(0, 5, N) + 0.5).feature_type == "CONTINUOUS"


def test_normal_is_continuous_with_its_moments(rng):
    values = rng.normal(3.0, 0.05, N)  # a small stddev is kept, not floored at 1 (ReAgent's floor)
    params = identify_feature(values)
    assert params.feature_type == "CONTINUOUS"
    assert params.mean == pytest.approx(values.mean())
    assert params.stddev == pytest.approx(values.std())
    assert params.stddev < 0.06
    assert identify_feature(values, IdentifyOptions(stddev_floor=1.0)).stddev == 1.0


def test_exponential_is_boxcox_by_the_stated_rule(rng):
    values = rng.exponential(1.0, N)
    params = identify_feature(values)
    assert params.feature_type == "BOXCOX"
    shift = -values.min()
    transformed, lam = stats.boxcox(np.maximum(values + shift, 1e-4))
    k2_original, k2_transformed = stats.normaltest(values).statistic, stats.normaltest(transformed).statistic
    # the rule of spec section 4 holds for the chosen parameters
    assert not 0.9 <= lam <= 1.1 and k2_original > 10 * k2_transformed and k2_transformed <= 1000
    assert params.boxcox_lambda == pytest.approx(lam)
    assert params.boxcox_shift == pytest.approx(shift)
    assert params.mean == pytest.approx(transformed.mean())
    assert params.stddev == pytest.approx(transformed.std())


def test_skip_box_cox_uses_raw_moments(rng):
    values = rng.exponential(1.0, N)
    params = identify_feature(values, IdentifyOptions(skip_box_cox=True))
    assert params.feature_type == "CONTINUOUS"
    # ReAgent computed these on Box-Cox values even when Box-Cox was skipped; we do not
    assert params.mean == pytest.approx(values.mean()) and params.stddev == pytest.approx(values.std())


def test_heavy_tailed_mix_is_quantile_only_when_enabled(rng):
    values = np.concatenate([rng.normal(0.0, 1.0, N // 2), rng.standard_cauchy(N // 2)])
    assert identify_feature(values).feature_type == "CONTINUOUS"  # quantiles are skipped by default
    params = identify_feature(values, IdentifyOptions(skip_quantiles=False))
    assert params.feature_type == "QUANTILE"
    assert params.quantiles == tuple(np.quantile(values, np.linspace(0, 1, 21)))
    assert len(params.quantiles) == 21
    high = IdentifyOptions(skip_quantiles=False, quantile_k2_threshold=1e9)
    assert identify_feature(values, high).feature_type == "CONTINUOUS"


def test_quantiles_are_deduplicated(rng):
    values = np.concatenate([np.zeros(N - 300), rng.standard_cauchy(300) * 100])
    params = identify_feature(values, IdentifyOptions(skip_quantiles=False, skip_box_cox=True, quantile_size=10))
    assert params.feature_type == "QUANTILE"
    assert len(params.quantiles) == len(set(params.quantiles)) < 11


def test_tiny_range_is_a_no_op_continuous():
    values = 5.0 + np.linspace(0.0, 5e-5, N)
    params = identify_feature(values)
    assert (params.feature_type, params.mean, params.stddev) == ("CONTINUOUS", 0.0, 1.0)


def test_overrides_force_the_type(rng):
    values = rng.exponential(1.0, N)
    assert identify_feature(values, feature_type="CONTINUOUS").feature_type == "CONTINUOUS"
    assert identify_feature(values, feature_type="QUANTILE").feature_type == "QUANTILE"
    for kind in ("DO_NOT_PREPROCESS", "CLIP_LOG", "DISCRETE_ACTION", "BINARY"):
        assert identify_feature(values, feature_type=kind).feature_type == kind
    action = identify_feature(rng.uniform(-2, 2, N), feature_type="CONTINUOUS_ACTION")
    assert action.feature_type == "CONTINUOUS_ACTION" and -2 <= action.min_value < action.max_value <= 2
    normal = rng.normal(size=N)
    boxcox = identify_feature(normal, feature_type="BOXCOX")
    assert boxcox.feature_type == "BOXCOX" and boxcox.boxcox_shift == pytest.approx(-normal.min())
    enum = identify_feature(np.array([1.5, 2.5] * 20), feature_type="ENUM")
    assert enum.possible_values == (1.5, 2.5)
    with pytest.raises(BatchRLError, match="feature 4: cannot normalize as QUANTILE"):
        identify_feature(np.ones(100), feature_type="QUANTILE", feature="feature 4")


def test_non_finite_values_and_too_few_samples_name_the_feature():
    values = np.append(np.arange(100.0), np.nan)
    with pytest.raises(BatchRLError, match="state_features feature 3 has 1 NaN or infinite values"):
        identify_feature(values, feature="state_features feature 3")
    with pytest.raises(NotIdentified, match="feature 8 has 19 samples, fewer than 20"):
        identify_feature(np.arange(19.0), feature="feature 8")
