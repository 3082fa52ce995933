"""Chinchilla approaches 1 and 2, Kaplan's forms, BNSL and backtests on known data."""

import numpy as np
import pandas as pd
import pytest
from laws_data import ALABDULMOHSIN_LANG_CSV, BNSL_CSV

from scaling.errors import ConfigError, FitError
from scaling.laws.backtest import backtest_curves, holdout_mask
from scaling.laws.bnsl import extrapolation_errors
from scaling.laws.chinchilla import approach1, approach2, approach2_bootstrap, group_budgets
from scaling.laws.forms import CHINCHILLA, KAPLAN
from scaling.laws.kaplan import fit_kaplan, fit_power
from scaling.laws.tables import LawData, select

TRUTH = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


def isoflop_table(budgets=(1e18, 1e19, 1e20, 1e21), half_width=1.0, points=9) -> LawData:
    """IsoFLOP design around each budget's true optimum (C = 6ND), exact losses."""
    from scaling.laws.allocation import optimal_n

    rows = []
    for C in budgets:
        n_opt = float(optimal_n(TRUTH, C))
        for N in n_opt * np.logspace(-half_width, half_width, points):
            rows.append((N, C / (6 * N), C))
    N, D, C = (np.array(c) for c in zip(*rows, strict=True))
    return LawData(
        loss=CHINCHILLA.predict(TRUTH, N=N, D=D),
        N=N,
        D=D,
        C=C,
        columns={"loss": "L", "N": "N", "D": "D", "C": "C_kaplan"},
    )


def test_isoflop_and_envelope_recover_the_allocation_exponent():
    a_true = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    r2 = approach2(isoflop_table(), window=1.0)
    assert abs(r2.allocation["a"] - a_true) < 0.02
    assert abs(r2.allocation["a"] + r2.allocation["b"] - 1) < 0.02
    assert len(r2.diagnostics["budgets"]) == 4
    r1 = approach1(isoflop_table(points=41))
    assert abs(r1.allocation["a"] - a_true) < 0.03


def test_approach2_bootstrap_interval_covers_the_truth_and_marks_failed_resamples():
    a_true = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])
    data = isoflop_table(points=7)
    noisy = np.random.default_rng(1).normal(0.0, 0.004, data.loss.size)
    data = LawData(data.loss * np.exp(noisy), data.N, data.D, data.C, data.columns)
    labels = group_budgets(data.C)
    groups = [np.nonzero(labels == g)[0] for g in np.unique(labels)]
    s = approach2_bootstrap(data, groups, B=200, seed=0)
    a = s["a"][np.isfinite(s["a"])]
    assert a.size > 150 and np.std(a) > 1e-4  # the noise moves the minima
    lo, hi = np.percentile(a, [2.5, 97.5])
    assert lo < a_true < hi and hi - lo < 0.1
    ok = np.isfinite(s["a"])
    np.testing.assert_allclose(s["a"][ok] + s["b"][ok], 1.0, atol=1e-9)  # C = 6ND exactly
    # a budget whose runs all lie on one side of the minimum: every resample fails there
    one_sided = [groups[0], groups[1][:3]]
    assert np.all(np.isnan(approach2_bootstrap(data, one_sided, B=20, seed=0)["a"]))


def test_isoflop_window_checks():
    with pytest.raises(FitError, match="no interior minimum"):
        # every point on one side of the minimum: a monotone profile
        data = isoflop_table(points=13)
        approach2(data.subset(np.concatenate([np.arange(13) < 5] * 4)))
    r = approach2(isoflop_table(half_width=1.5))
    assert any("decades" in f for f in r.flags) and not r.converged
    with pytest.raises(ConfigError):
        approach2(isoflop_table(), window=-1)


@pytest.mark.slow  # ~50 s of compilation on 2 cores
def test_kaplan_forms_recover_their_constants():
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e10, 7), np.geomspace(1e8, 1e12, 7)))
    truth = {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}
    data = LawData(loss=KAPLAN.predict(truth, N=N, D=D), N=N, D=D)
    r = fit_kaplan(data)
    assert r.params["alpha_N"] == pytest.approx(0.076, rel=0.02)
    assert r.params["alpha_D"] == pytest.approx(0.095, rel=0.02)
    single = LawData(loss=(8.8e13 / N[:7]) ** 0.076, N=N[:7])
    rn = fit_power(single, "N", offset=False)
    assert rn.params["E"] == 0.0 and rn.params["alpha"] == pytest.approx(0.076, rel=1e-3)
    assert rn.derived["N_c"] == pytest.approx(8.8e13, rel=1e-2)


def test_bnsl_extrapolates_where_a_power_law_cannot():
    df = pd.read_csv(BNSL_CSV)
    data = select(df, ("D",))
    fit_rows = df["used_for_fit"].to_numpy() == 1
    assert fit_rows.sum() == 14
    err = extrapolation_errors(data.subset(fit_rows), data.subset(~fit_rows))
    assert err["bnsl"] < 0.05
    assert err["bnsl"] < 0.1 * err["power_law"]


def test_backtest_on_language_curves_two_estimators():
    df = pd.read_csv(ALABDULMOHSIN_LANG_CSV).drop_duplicates()
    assert len(df) == 712
    out = backtest_curves(
        df,
        curve_cols=("Domain", "Task", "Model"),
        x_col="Seen Examples",
        loss_col="Loss",
        split_col="Training",
    )
    assert out["curves"] == 20 and len(out["estimators"]) >= 2
    rmse = {k: v["rmse_log"] for k, v in out["estimators"].items()}
    assert all(np.isfinite(v) and 0 < v < 0.2 for v in rmse.values())
    assert rmse["power_law_offset"] < rmse["power_law"]  # the offset matters on these curves
    assert out["estimators"]["power_law"]["n_test"] == int((df["Training"] == 0).sum())


def test_holdout_specs():
    data = isoflop_table()
    assert holdout_mask(data, "largest:1", "C").sum() == 9
    assert holdout_mask(data, "C>=1e20", "C").sum() == 18
    with pytest.raises(ConfigError, match="holdout"):
        holdout_mask(data, "biggest", "C")
    with pytest.raises(ConfigError):
        holdout_mask(data, "largest:4", "C")  # nothing left to fit
