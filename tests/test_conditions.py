"""Capture conditions: the sensor noise every evaluation scores under."""

import numpy as np
import pytest

from ssran_edge.conditions import CONDITIONS, Condition, capture


def test_clean_is_the_input_itself():
    msi = np.random.default_rng(0).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    assert capture(msi, CONDITIONS["clean"], "a") is msi


def test_noise_is_fixed_per_condition_and_scene_whatever_the_order():
    msi = np.full((64, 64, 3), 0.5, np.float32)
    a = capture(msi, CONDITIONS["read 1%"], "face")
    np.testing.assert_array_equal(a, capture(msi, CONDITIONS["read 1%"], "face"))
    assert not np.array_equal(a, capture(msi, CONDITIONS["read 1%"], "cloth"))  # scenes draw apart
    assert not np.array_equal(a - msi, capture(msi, CONDITIONS["read 0.5%"], "face") - msi)


@pytest.mark.parametrize("name", ["read 0.5%", "read 1%", "read 0.5% + shot"])
def test_noise_has_the_condition_s_variance_and_is_not_clipped(name):
    condition = CONDITIONS[name]
    for level in (0.0, 0.2, 0.8):
        msi = np.full((256, 256, 3), level, np.float32)
        noise = capture(msi, condition, "flat") - msi
        expected = condition.read ** 2 + condition.shot * level
        assert noise.var() == pytest.approx(expected, rel=0.02)
        assert abs(noise.mean()) < 4 * np.sqrt(expected / noise.size)
    dark = capture(np.zeros((64, 64, 3), np.float32), condition, "dark")
    assert dark.min() < 0  # a dark pixel reads negative, as raw minus black level does


def test_describe_names_the_noise():
    described = Condition("x", read=0.01, shot=0.0005).describe()
    assert described == "read noise sigma 0.01 + shot noise variance 0.0005 x signal"
    assert CONDITIONS["clean"].describe() == "clean linear MSI"
