"""Figures: each returns a Figure with labelled log axes, legends and units; saves as PNG."""

import numpy as np
from matplotlib.figure import Figure
from test_laws_approaches import TRUTH, isoflop_table

from scaling.laws.allocation import chinchilla_allocation
from scaling.laws.chinchilla import approach1, approach2
from scaling.laws.result import FitResult
from scaling.plots import laws as plots


def chinchilla_result() -> FitResult:
    rng = np.random.default_rng(0)
    samples = {k: (v * (1 + 0.02 * rng.standard_normal(50))).tolist() for k, v in TRUTH.items()}
    return FitResult(
        law="chinchilla",
        method="test",
        params=dict(TRUTH),
        allocation=chinchilla_allocation(TRUTH),
        options={"flops_factor": 6.0, "delta": 1e-3},
        diagnostics={"bootstrap": {"samples": samples}},
        columns={"loss": "eval_loss", "N": "N_nonembedding", "D": "D", "C": "C_kaplan"},
    )


def _check(fig: Figure, tmp_path, name: str) -> None:
    assert isinstance(fig, Figure)
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() and ax.get_ylabel()
        assert ax.get_xscale() == "log"
    fig.savefig(tmp_path / name)
    assert (tmp_path / name).stat().st_size > 5000


def test_all_figures(tmp_path):
    data = isoflop_table()
    fit = chinchilla_result()
    fig = plots.loss_vs_compute(data, fit)
    ax = fig.axes[0]
    assert "FLOP" in ax.get_xlabel() and "C_kaplan" in ax.get_xlabel()
    labels = ax.get_legend_handles_labels()[1]
    assert any("interval" in lab for lab in labels) and any("frontier" in lab for lab in labels)
    _check(fig, tmp_path, "loss.png")
    iso = approach2(data, window=1.0)
    fig = plots.isoflop_curves(data, iso)
    assert len(fig.axes[0].lines) >= 2 * len(iso.diagnostics["budgets"])  # parabolas + minima
    _check(fig, tmp_path, "iso.png")
    fig = plots.optimal_allocation(fit, data)
    assert [a.get_ylabel() for a in fig.axes] == ["N_opt [parameters]", "D_opt [tokens]"]
    _check(fig, tmp_path, "alloc.png")
    _check(plots.optimal_allocation(approach1(data), data), tmp_path, "env.png")
    _check(plots.residuals(data, fit), tmp_path, "res.png")


def test_band_leaves_out_resamples_that_did_not_converge():
    from scaling.plots.laws import _band

    draws = np.random.default_rng(0).normal(size=(50, 7))
    with_nan = np.vstack([draws, np.full((1, 7), np.nan)])
    np.testing.assert_allclose(_band(with_nan, 0.9), _band(draws, 0.9))
    assert _band(np.full((3, 7), np.nan), 0.9) is None
