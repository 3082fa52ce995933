"""Chinchilla approach 3 on Epoch AI's reconstruction of Hoffmann et al.'s runs (issue 5)."""

import numpy as np
import pandas as pd
import pytest
from laws_data import EPOCH_CSV

from scaling.laws.forms import CHINCHILLA
from scaling.laws.parametric import fit_parametric
from scaling.laws.published import (
    EPOCH_BOOTSTRAP_SE,
    EPOCH_COLUMNS,
    EPOCH_MAX_OBJECTIVE,
    EPOCH_TARGETS,
    epoch_rows,
)
from scaling.laws.tables import select


@pytest.fixture(scope="module")
def epoch_frame():
    return pd.read_csv(EPOCH_CSV)


@pytest.fixture(scope="module")
def epoch_fit(epoch_frame):
    """The full 4,500-start fit with a small bootstrap, once per session."""
    data = select(epoch_rows(epoch_frame), ("N", "D"), **EPOCH_COLUMNS)
    return fit_parametric(CHINCHILLA, data, bootstrap=200, seed=1)


def test_epoch_selection_keeps_240_rows_and_derives_tokens(epoch_frame):
    rows = epoch_rows(epoch_frame)
    assert len(epoch_frame) == 245 and len(rows) == 240
    assert rows["loss"].max() < np.sort(epoch_frame["loss"])[-5]
    data = select(rows, ("N", "D"), **EPOCH_COLUMNS)
    assert data.columns["D"] == "C/(6N)"
    np.testing.assert_allclose(6 * data.N * data.D, data.C, rtol=1e-12)


def test_approach3_reproduces_epoch(epoch_fit):
    r = epoch_fit
    values = {**r.params, **r.allocation}
    for name, (target, tol, kind) in EPOCH_TARGETS.items():
        err = abs(values[name] - target) / (target if kind == "rel" else 1.0)
        assert err <= tol, f"{name} = {values[name]} vs {target} ({kind} tol {tol})"
    assert r.objective <= EPOCH_MAX_OBJECTIVE
    assert r.converged and not r.flags
    assert r.n_points == 240
    assert r.diagnostics["starts"] == 4500
    assert r.diagnostics["starts_at_best"] >= 10


def test_bootstrap_standard_errors_match_epoch(epoch_fit):
    for name, se in EPOCH_BOOTSTRAP_SE.items():
        got = epoch_fit.intervals[name]["se"]
        assert abs(got - se) / se <= 0.25, f"SE({name}) = {got} vs {se}"
    iv = epoch_fit.intervals["a"]
    assert iv["lo"] < epoch_fit.allocation["a"] < iv["hi"]
    assert epoch_fit.diagnostics["bootstrap"]["converged_fraction"] >= 0.95


def test_all_245_rows_shift_the_fit(epoch_frame):
    """The five high-loss outliers move E and beta a lot: E ~ 1.89, beta ~ 0.45."""
    data = select(epoch_frame, ("N", "D"), **EPOCH_COLUMNS)
    r = fit_parametric(CHINCHILLA, data)
    assert r.n_points == 245
    assert abs(r.params["E"] - 1.89) < 0.02
    assert abs(r.params["beta"] - 0.45) < 0.02


def test_fit_result_round_trips_json(epoch_fit, tmp_path):
    from scaling import __version__
    from scaling.laws.result import FitResult

    path = tmp_path / "fit.json"
    epoch_fit.save(path)
    back = FitResult.load(path)
    assert back.params == epoch_fit.params  # full precision: floats round-trip exactly
    assert set(back.params) == {"E", "A", "B", "alpha", "beta"}
    assert {"a", "b"} <= set(back.allocation)
    assert back.version == __version__ and len(back.data_hash) == 16
    assert back.columns["N"] == "Model Size" and back.options["delta"] == 1e-3
    assert "alpha" in str(back) and "objective" in back.to_table()
