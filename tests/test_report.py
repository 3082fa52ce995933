"""`scaling report`: a report built from a real sweep folder (the quickstart's, shipped in
tests/data) and from an IsoFLOP sweep whose losses follow a known law (planner, store and
results of the real sweep layer; a stand-in trainer writes the law's losses)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.cli.main import main
from scaling.errors import DataError
from scaling.io import atomic_write_json
from scaling.laws.forms import CHINCHILLA
from scaling.laws.result import FitResult
from scaling.report import build_report
from scaling.report.figures import make_figures
from scaling.report.study import analyse
from scaling.sweep.designs import plan
from scaling.sweep.runner import prepare_sweep_dir
from scaling.sweep.spec import load_spec

QUICKSTART = Path(__file__).parent / "data" / "quickstart_sweep"
FAST = {"bootstrap": 40, "seed": 0}


def small_grid() -> np.ndarray:
    """A 243-point subset of Hoffmann's 4,500-start grid (raw coordinates e, a, b, alpha, beta)."""
    import itertools

    axes = (
        [-1.0, 0.0, 1.0],
        [0.0, 10.0, 20.0],
        [0.0, 10.0, 20.0],
        [0.0, 0.5, 1.0],
        [0.0, 0.5, 1.0],
    )
    return np.array(list(itertools.product(*axes)))


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("qs") / "quickstart"
    shutil.copytree(QUICKSTART, d)
    return d


@pytest.fixture(scope="module")
def report(quickstart, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return build_report(quickstart, out, starts=small_grid(), **FAST)


# ------------------------------------------------------------------ files and tables


def test_report_writes_html_markdown_figures_fits_and_allocation(report):
    out = report.parent
    assert report.name == "report.html" and report.is_file()
    md = (out / "report.md").read_text(encoding="utf-8")
    for name in ("loss_curves", "isoflop", "frontier", "allocation", "residuals"):
        png = out / "figures" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{name}.png" in md
        assert f"figures/{name}.png" in report.read_text(encoding="utf-8")
    for approach in ("approach1", "approach2", "approach3"):
        res = FitResult.load(out / "fits" / f"{approach}.json")
        assert res.convention == "attention"
        assert res.columns["N"] == "N_nonembedding"
    assert "C = C_attention" in md and "N = N_nonembedding" in md


def test_constants_have_finite_intervals_around_the_estimate(report):
    res = FitResult.load(report.parent / "fits" / "approach3.json")
    for name in ("E", "A", "B", "alpha", "beta"):
        iv = res.intervals[name]
        assert math.isfinite(iv["lo"]) and math.isfinite(iv["hi"]), name
        assert iv["lo"] <= res.params[name] <= iv["hi"] or name == "E", (name, iv)
    for name in ("alpha", "beta"):
        assert 0.05 < res.params[name] < 1.5, (name, res.params[name])


def test_allocation_extrapolated_10x_and_100x_from_both_approaches(report):
    table = pd.read_csv(report.parent / "allocation.csv")
    assert sorted(table["approach"].unique()) == ["approach 2", "approach 3"]
    for approach, rows in table.groupby("approach"):
        assert sorted(rows["C_factor"]) == [1.0, 10.0, 100.0]
        big = rows[rows["C_factor"] == 100.0].iloc[0]
        assert np.isfinite(big[["N_lo", "N_hi", "D_lo", "D_hi"]].astype(float)).all(), approach
        assert big["N_lo"] <= big["N_opt"] <= big["N_hi"]
        # N_opt grows with compute
        assert rows.sort_values("C_factor")["N_opt"].is_monotonic_increasing
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    assert "10x the largest budget" in md and "100x the largest budget" in md
    assert "agree within" in md or "disagree beyond" in md


# ------------------------------------------------------------------ figures


def test_figures_have_labels_log_scales_legends_and_no_clipped_text(quickstart):
    study = analyse(quickstart, starts=small_grid(), bootstrap=10)
    figs = make_figures(study)
    assert set(figs) == {"loss_curves", "isoflop", "frontier", "allocation", "residuals"}
    for name, fig in figs.items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>" or not ax.has_data():
                continue
            assert ax.get_xlabel().strip(), name
            assert ax.get_xscale() == "log", (name, ax.get_xlabel())
        assert any(ax.get_legend() is not None for ax in fig.axes), name
        assert any(ax.get_ylabel().strip() for ax in fig.axes), name
        # everything drawn (tick labels, titles, legends, colorbars) lies inside the figure
        tight, page = fig.get_tightbbox(renderer), fig.bbox_inches
        tol = 0.02  # inches
        assert tight.x0 >= page.x0 - tol and tight.x1 <= page.x1 + tol, (name, tight, page)
        assert tight.y0 >= page.y0 - tol and tight.y1 <= page.y1 + tol, (name, tight, page)
    alloc = figs["allocation"]
    assert all(ax.get_yscale() == "log" for ax in alloc.axes)
    units = " ".join(ax.get_xlabel() for f in figs.values() for ax in f.axes)
    assert "FLOP" in units and "attention" in units


# ------------------------------------------------------------------ diverged and bad input


def test_diverged_runs_are_excluded_and_listed(quickstart, tmp_path):
    d = tmp_path / "sweep"
    shutil.copytree(quickstart, d)
    run = sorted((d / "runs").iterdir())[0]
    status = json.loads((run / "status.json").read_text())
    atomic_write_json(run / "status.json", {**status, "state": "diverged", "reason": "spike"})
    study = analyse(d, starts=small_grid(), bootstrap=0)
    assert run.name not in set(study.final["run_id"])
    assert [e["run_id"] for e in study.excluded_runs] == [run.name]
    assert study.excluded_runs[0]["state"] == "diverged"


@pytest.mark.parametrize("kind", ["missing", "file", "no_runs", "no_finished"])
def test_bad_sweep_folder_is_one_line_and_exit_2(kind, tmp_path, capsys):
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("hello")
    elif kind == "no_runs":
        target.mkdir()
    elif kind == "no_finished":
        (target / "runs").mkdir(parents=True)
    with pytest.raises(DataError):
        analyse(target, bootstrap=0)
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scaling report: error:") and "\n" not in err
    assert str(target) in err


def test_negative_bootstrap_is_refused(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--bootstrap", "-1"]) == 2
    assert "--bootstrap" in capsys.readouterr().err


# ------------------------------------------------------------------ a sweep with a known law

LAW = {"E": 1.2, "A": 60.0, "B": 400.0, "alpha": 0.35, "beta": 0.4}
SPEC = """
name = "law"
convention = "kaplan"
[base.model]
variant = "gpt2"
vocab_size = 64
context = 32
[base.train]
batch_size = 4
[design]
kind = "isoflop"
budgets = [1e11, 4e11, 1.6e12]
sizes_per_budget = 7
spread = 4.0
prior_tokens_per_param = 10.0
[design.ladder]
head_dim = 16
aspect = 16.0
"""


def law_train(config, run_dir, noise: float, rng: np.random.Generator) -> None:
    """Stand-in trainer: the run store's files, eval loss from LAW at each evaluation."""
    from scaling import flops

    n = flops.param_counts(config.model).N_nonembedding
    steps = config.total_steps
    rows = []
    for step in sorted({max(1, steps * i // 4) for i in range(1, 5)}):
        tokens = step * config.tokens_per_step
        loss = float(CHINCHILLA.predict(LAW, N=np.array(n), D=np.array(tokens)))
        loss *= math.exp(noise * rng.standard_normal())
        rows.append(
            {
                "step": step,
                "tokens": tokens,
                "eval_loss": loss,
                "eval_loss_se": 0.001,
                "train_loss": loss,
            }
        )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(run_dir / "config.json", config.to_dict())
    atomic_write_json(
        run_dir / "status.json",
        {"state": "done", "step": steps, "tokens": steps * config.tokens_per_step},
    )


def test_known_law_is_recovered_within_intervals(tmp_path):
    spec_path = tmp_path / "law.toml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path)
    runs = plan(spec)
    store = prepare_sweep_dir(spec, runs, tmp_path / "law")
    rng = np.random.default_rng(0)
    for r in runs:
        law_train(r.config, store.run_dir(r.run_id), 0.003, rng)
    study = analyse(tmp_path / "law", starts=small_grid(), bootstrap=60)
    p = study.fits["approach3"].params
    iv = study.fits["approach3"].intervals
    for name in ("alpha", "beta"):
        assert iv[name]["lo"] <= LAW[name] <= iv[name]["hi"], (name, p[name], iv[name])
    a_true = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
    assert abs(study.fits["approach3"].allocation["a"] - a_true) < 0.03
    assert abs(study.fits["approach2"].allocation["a"] - a_true) < 0.1
    assert not study.excluded_budgets


def test_band_leaves_out_nan_draws_and_has_no_band_where_every_draw_is_nan():
    import warnings

    import numpy as np

    from scaling.report.figures import LEVEL, _band

    draws = np.array([[1.0, np.nan, 3.0], [2.0, np.nan, np.nan], [3.0, np.nan, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no All-NaN RuntimeWarning
        lo, hi = _band(draws)
    q = 50 * (1 - LEVEL)
    assert np.allclose([lo[0], hi[0]], np.percentile([1.0, 2.0, 3.0], [q, 100 - q]))
    assert np.isnan(lo[1]) and np.isnan(hi[1])
    assert np.allclose([lo[2], hi[2]], np.percentile([3.0, 5.0], [q, 100 - q]))
