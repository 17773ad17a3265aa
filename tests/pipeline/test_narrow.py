"""Coarse-to-fine narrowing, as properties over random spaces and random top-k sets drawn from them."""
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysweep.pipeline import narrow_spec
from raysweep.spec import Space
from tests.support import make_spec, numeric_params

choices = st.one_of(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=2, max_size=5, unique=True),
                    st.lists(st.sampled_from([1, 2, 3, 16, 64, 256, 512, 0.5, 1.5]), min_size=2, max_size=9, unique=True)
                    ).map(lambda v: {"values": v})


def width(p, log):
    return math.log(p.max / p.min) if log else p.max - p.min


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.one_of(numeric_params(), choices), min_size=1, max_size=5),
       st.integers(1, 8), st.floats(0, 0.5), st.integers(0, 2**31))
def test_fine_space_holds_the_top_k_is_smaller_and_keeps_scale_and_bounds(params, k, margin, seed):
    coarse = make_spec(params)
    space = Space(coarse)
    rng = np.random.default_rng(seed)
    top = [space.sample(rng) for _ in range(k)]
    fine = narrow_spec(coarse, top, margin)
    fine_space = Space(fine)
    for config in top:
        assert fine_space.contains(config), (config, fine.parameters)
    for name, old in coarse.parameters.items():
        new = fine.parameters[name]
        seen = [c[name] for c in top]
        if old.is_categorical:
            if isinstance(old.values[0], str):
                assert new.values == [v for v in old.values if v in seen]  # exactly the values seen, in order
                continue
            # numbers narrow like a range over their sorted positions: the hull of those seen, widened by
            # margin x the steps rounded up, in the spec's order
            order = sorted(old.values)
            pad = math.ceil(margin * (len(order) - 1) - 1e-9)
            lo = max(0, order.index(min(seen)) - pad)
            hi = min(len(order) - 1, order.index(max(seen)) + pad)
            assert new.values == [v for v in old.values if v in order[lo:hi + 1]]
            continue
        if new.distribution == "constant":  # every top config had the same value and no margin fits
            assert len(set(seen)) == 1
            continue
        assert new.distribution == old.distribution and new.q == old.q
        tol = 1e-9 * max(1.0, abs(old.max))  # quantised values sit on k*q, up to float fuzz
        assert old.min - tol <= new.min <= min(seen) + tol and max(seen) - tol <= new.max <= old.max + tol
        log = old.is_log
        if old.distribution in ("uniform", "loguniform"):
            # the hull widened by margin x the coarse width on each side, in log space for log params
            pad = margin * width(old, log)
            lo, hi = (math.log(min(seen)), math.log(max(seen))) if log else (min(seen), max(seen))
            want_lo = max(math.log(old.min) if log else old.min, lo - pad)
            want_hi = min(math.log(old.max) if log else old.max, hi + pad)
            got_lo, got_hi = (math.log(new.min), math.log(new.max)) if log else (new.min, new.max)
            assert math.isclose(got_lo, want_lo, rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(got_hi, want_hi, rel_tol=1e-9, abs_tol=1e-9)
        hull_plus_margin_covers = (new.min == old.min and new.max == old.max)
        if not hull_plus_margin_covers:
            assert width(new, log) < width(old, log)  # strictly smaller whenever it does not reach both ends


def test_conditionals_follow_the_parent_values_kept():
    coarse = make_spec({
        "optimizer": {"values": ["sgd", "adam", "adamw"]},
        "momentum": {"distribution": "uniform", "min": 0.8, "max": 0.99, "when": {"optimizer": "sgd"}},
        "beta1": {"distribution": "uniform", "min": 0.85, "max": 0.95, "when": {"optimizer": ["adam", "adamw"]}},
        "lr": {"distribution": "loguniform", "min": 1e-5, "max": 1e-1},
    })
    top = [{"optimizer": "adam", "beta1": 0.9, "lr": 1e-3}, {"optimizer": "adamw", "beta1": 0.91, "lr": 3e-3}]
    fine = narrow_spec(coarse, top, 0.1)
    assert "momentum" not in fine.parameters  # sgd is gone, so is its knob
    assert fine.parameters["optimizer"].values == ["adam", "adamw"]
    assert fine.parameters["beta1"].parent_values == ["adam", "adamw"]
    lr = fine.parameters["lr"]
    # best near 1e-3 in a 1e-5..1e-1 search -> a decade-ish window around it
    assert math.isclose(lr.min, 1e-3 * 10 ** (-0.4), rel_tol=1e-9) and math.isclose(lr.max, 3e-3 * 10 ** 0.4, rel_tol=1e-9)
    samples = [Space(fine).sample(np.random.default_rng(i)) for i in range(200)]
    assert all("momentum" not in s and "beta1" in s for s in samples)


def test_normal_becomes_a_bounded_range_around_the_top_k():
    coarse = make_spec({"x": {"distribution": "normal", "mu": 0.0, "sigma": 2.0}})
    fine = narrow_spec(coarse, [{"x": -1.0}, {"x": 0.5}], 0.25)
    x = fine.parameters["x"]
    assert (x.distribution, x.min, x.max) == ("uniform", -1.0 - 2.0, 0.5 + 2.0)


def test_sizes_keep_their_neighbours_and_names_only_what_was_seen():
    coarse = make_spec({"hidden": {"values": [512, 64, 256, 1024]}, "layers": {"values": [1, 2, 3]},
                        "optimizer": {"values": ["sgd", "adamw"]}})
    top = [{"hidden": 512, "layers": 1, "optimizer": "adamw"}, {"hidden": 512, "layers": 1, "optimizer": "adamw"}]
    fine = narrow_spec(coarse, top, 0.1)
    # one step each side of 512 in size order, kept in the spec's order; layers 1 keeps 2; sgd was never seen
    assert fine.parameters["hidden"].values == [512, 256, 1024]
    assert fine.parameters["layers"].values == [1, 2]
    assert fine.parameters["optimizer"].values == ["adamw"]
    exact = narrow_spec(coarse, top, 0.0)
    assert exact.parameters["hidden"].values == [512] and exact.parameters["layers"].values == [1]
