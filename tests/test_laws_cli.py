"""`scaling fit`: JSON output, plots, and one-line errors with a non-zero exit for bad input."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from scaling.cli.main import main
from scaling.laws.forms import POWER_N
from scaling.laws.result import FitResult

matplotlib.use("Agg")


def power_table(n=12, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = np.geomspace(1e6, 1e9, n)
    loss = POWER_N.predict({"E": 1.5, "A": 40.0, "alpha": 0.3}, N=N)
    loss = loss * np.exp(0.002 * rng.standard_normal(n))
    return pd.DataFrame({"N_nonembedding": N, "eval_loss": loss, "other": np.arange(n)})


@pytest.fixture
def csv(tmp_path):
    def write(df, name="runs.csv"):
        p = tmp_path / name
        df.to_csv(p, index=False)
        return str(p)

    return write


def run_err(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_fit_writes_json_and_plot(csv, tmp_path, capsys):
    out, png = tmp_path / "fit.json", tmp_path / "fit.png"
    rc = main(
        ["fit", csv(power_table()), "--law", "power-n", "--json", str(out), "--plot", str(png)]
    )
    assert rc == 0
    d = json.loads(out.read_text())
    assert set(d["params"]) == {"E", "A", "alpha"}
    assert abs(d["params"]["alpha"] - 0.3) < 0.02
    assert d["columns"] == {"loss": "eval_loss", "N": "N_nonembedding"}
    assert FitResult.from_dict(d).params == d["params"]
    assert png.stat().st_size > 5000
    assert "alpha" in capsys.readouterr().out


def test_fit_parquet_and_holdout(tmp_path, capsys):
    p = tmp_path / "runs.parquet"
    power_table(16).to_parquet(p)
    out = tmp_path / "bt.json"
    assert (
        main(["fit", str(p), "--law", "power-n", "--holdout", "largest:3", "--json", str(out)]) == 0
    )
    bt = json.loads(out.read_text())["backtest"]
    assert bt["n_test"] == 3 and bt["n_train"] == 13 and bt["rmse_log"] < 0.02


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda df: df.assign(eval_loss=df.eval_loss.where(df.index != 3, np.nan)), "NaN"),
        (lambda df: df.assign(eval_loss=df.eval_loss.where(df.index != 3, np.inf)), "inf"),
        (
            lambda df: df.assign(N_nonembedding=df.N_nonembedding.where(df.index != 2, 0)),
            "non-positive",
        ),
        (lambda df: df.head(3), "need more points than parameters"),
    ],
)
def test_bad_values_are_one_line_errors(mutate, needle, csv, capsys):
    rc, err = run_err(["fit", csv(mutate(power_table())), "--law", "power-n"], capsys)
    assert rc == 2 and needle in err and len(err.splitlines()) == 1


def test_missing_column_names_it_and_lists_available(csv, capsys):
    rc, err = run_err(["fit", csv(power_table()), "--law", "power-n", "--loss", "nope"], capsys)
    assert rc == 2 and "'nope'" in err and "eval_loss" in err and "other" in err
    assert len(err.splitlines()) == 1
    rc, err = run_err(["fit", csv(power_table()), "--law", "power-d"], capsys)
    assert rc == 2 and "--tokens" in err


def test_isoflop_without_interior_minimum_is_an_error(csv, capsys):
    rows = []
    for C in (1e18, 1e19):
        for N in np.geomspace(1e6, 1e7, 6):  # all far left of the optimum: monotone profiles
            D = C / (6 * N)
            rows.append(
                {
                    "N_nonembedding": N,
                    "D": D,
                    "C_kaplan": C,
                    "eval_loss": 1.7 + 400 / N**0.34 + 410 / D**0.28,
                }
            )
    rc, err = run_err(["fit", csv(pd.DataFrame(rows)), "--law", "isoflop"], capsys)
    assert rc == 2 and "no interior minimum" in err and len(err.splitlines()) == 1


def test_unreadable_inputs(tmp_path, capsys):
    rc, err = run_err(["fit", str(tmp_path / "missing.csv")], capsys)
    assert rc == 2 and "does not exist" in err
    bad = tmp_path / "x.txt"
    bad.write_text("a,b\n1,2\n")
    rc, err = run_err(["fit", str(bad)], capsys)
    assert rc == 2 and "suffix" in err
    empty = tmp_path / "not_a_sweep"
    empty.mkdir()
    rc, err = run_err(["fit", str(empty)], capsys)  # folders go through load_results
    assert rc == 2 and "not_a_sweep" in err and len(err.splitlines()) == 1
