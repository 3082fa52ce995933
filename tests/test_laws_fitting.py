"""Robust fitter: synthetic truth recovery with honest intervals, constraints, convergence flags."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from scaling.errors import FitError
from scaling.laws.fitting import FitOptions, fit_raw
from scaling.laws.forms import CHINCHILLA
from scaling.laws.parametric import fit_parametric
from scaling.laws.published import EPOCH_2024, HOFFMANN_2022
from scaling.laws.tables import LawData

TRUTH = {"E": 2.2, "A": 300.0, "B": 900.0, "alpha": 0.30, "beta": 0.26}
# A coarse part of Hoffmann's grid keeps the test fast; the full grid is tested on Epoch's data.
STARTS = np.array(
    list(
        itertools.product(
            [-1.0, 0.0, 1.0], [0.0, 10.0, 20.0], [0.0, 10.0, 20.0], [0.0, 0.5, 1.0], [0.0, 0.5, 1.0]
        )
    )
)


def synthetic(sigma: float, seed: int) -> LawData:
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 8)))
    L = CHINCHILLA.predict(TRUTH, N=N, D=D) * np.exp(sigma * rng.standard_normal(N.size))
    return LawData(loss=L, N=N, D=D, C=6 * N * D, columns={"loss": "L", "N": "N", "D": "D"})


@pytest.fixture(scope="module")
def fits():
    return {
        s: fit_parametric(
            CHINCHILLA, synthetic(s, seed=3), starts=STARTS, bootstrap=120, extra_starts=2, seed=5
        )
        for s in (0.004, 0.02)
    }


def test_truth_inside_intervals(fits):
    truth_a = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    for sigma, r in fits.items():
        for name, value in {**TRUTH, "a": truth_a}.items():
            iv = r.intervals[name]
            assert iv["lo"] <= value <= iv["hi"], f"sigma={sigma}: {name}={value} not in {iv}"


def test_intervals_track_the_noise_and_the_data(fits):
    lo_noise, hi_noise = fits[0.004], fits[0.02]
    for name in ("alpha", "beta", "E"):
        ratio = hi_noise.intervals[name]["se"] / lo_noise.intervals[name]["se"]
        assert 2.5 < ratio < 10, f"SE({name}) ratio {ratio} for 5x the noise"
    # Intervals are informative: they exclude the published constants of other data.
    for ref in (EPOCH_2024, HOFFMANN_2022):
        iv = lo_noise.intervals["alpha"]
        assert not iv["lo"] <= ref["alpha"] <= iv["hi"] or abs(ref["alpha"] - 0.30) < 0.01
        ivb = lo_noise.intervals["beta"]
        assert not ivb["lo"] <= ref["beta"] <= ivb["hi"]
    assert abs(lo_noise.params["alpha"] - TRUTH["alpha"]) < 0.02


def test_fixed_parameters_and_bounds():
    data = synthetic(0.004, seed=4)
    r = fit_parametric(CHINCHILLA, data, starts=STARTS, fixed={"E": 2.2})
    assert r.params["E"] == pytest.approx(2.2, rel=1e-12)
    assert abs(r.params["alpha"] - TRUTH["alpha"]) < 0.02
    rb = fit_parametric(CHINCHILLA, data, starts=STARTS, bounds={"alpha": (0.0, 0.25)})
    assert 0.0 <= rb.params["alpha"] <= 0.25
    assert rb.objective > r.objective  # the bound binds


def test_nonconvergence_is_flagged_or_raised():
    data = synthetic(0.004, seed=4)
    logX, logy = np.log(np.stack([data.N, data.D], 1)), np.log(data.loss)
    r = fit_raw(CHINCHILLA, logX, logy, starts=STARTS, options=FitOptions(max_iter=3))
    assert not r.converged and any("max_iter" in f for f in r.flags)
    with pytest.raises(FitError, match="did not converge"):
        fit_raw(
            CHINCHILLA, logX, logy, starts=STARTS, options=FitOptions(max_iter=3, on_fail="raise")
        )


def test_too_few_points_and_float32_untouched():
    data = synthetic(0.004, seed=4)
    with pytest.raises(FitError, match="free parameters"):
        fit_raw(CHINCHILLA, np.log(np.stack([data.N, data.D], 1))[:5], np.log(data.loss)[:5])
    assert jnp.ones(2).dtype == jnp.float32  # x64 is switched on only inside the fitter
