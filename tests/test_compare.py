"""Comparison of scaling laws by group (scaling.laws.compare): on IsoFLOP runs generated from
known per-variant laws with noise, the analysis recovers each exponent and compute multiplier
within its bootstrap interval and says "differs" only for the variant whose exponent differs;
bad input is one clear error."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scaling.errors import DataError
from scaling.laws.compare import CompareOptions, compare

E_TRUE = 1.7
BUDGETS = (1e17, 1e18, 1e19, 1e20)
# L = E + A/(sN)^alpha + B/(sD)^beta with D = C/(6N): the frontier is E + G C^-gamma with
# gamma = alpha beta / (alpha + beta); s rescales compute: k = 1/s^2 x the baseline's.
LAWS = {
    "gpt2": (400.0, 400.0, 0.34, 0.28, 1.0),
    "llama": (400.0, 400.0, 0.34, 0.28, 0.8),  # same exponent, k = 1/0.64 = 1.5625
    "performer": (250.0, 900.0, 0.45, 0.40, 1.0),  # a steeper law (gamma 0.212 vs 0.154)
}


def synthetic_runs(laws=LAWS, budgets=BUDGETS, sizes=5, spread=3.0, noise=0.003, seed=0):
    """IsoFLOP runs of each law: `sizes` sizes spread x/÷ `spread` around its optimum."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, (A, B, a, b, s) in laws.items():
        for C in budgets:
            n_opt = (a * A / (b * B)) ** (1 / (a + b)) * (C / 6) ** (b / (a + b))
            for e in np.linspace(-1, 1, sizes):
                N = n_opt * spread**e
                D = C / (6 * N)
                loss = E_TRUE + A / (s * N) ** a + B / (s * D) ** b
                rows.append(
                    {
                        "model.variant": name,
                        "C_attention": C * (1 + 0.01 * rng.standard_normal()),
                        "N_nonembedding": N,
                        "D": D,
                        "eval_loss": loss * math.exp(noise * rng.standard_normal()),
                    }
                )
    return pd.DataFrame(rows)


def true_gamma(law) -> float:
    _, _, a, b, _ = law
    return a * b / (a + b)


def true_compute_at(law, loss: float) -> float:
    """C where the law's exact compute frontier reaches `loss` (bisection in log C)."""
    A, B, a, b, s = law
    logn = np.linspace(0, 40, 40001)

    def frontier(logc: float) -> float:
        N = np.exp(logn)
        return float(np.min(E_TRUE + A / (s * N) ** a + B / (s * np.exp(logc) / (6 * N)) ** b))

    lo, hi = math.log(1e10), math.log(1e30)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if frontier(mid) > loss else (lo, mid)
    return math.exp(lo)


@pytest.fixture(scope="module")
def result():
    return compare(synthetic_runs(), CompareOptions(bootstrap=200, nd=False, seed=1))


def test_exponents_are_recovered_within_their_intervals(result):
    for name, law in LAWS.items():
        row = result.row(name)
        iv = row["gamma_interval"]
        assert iv["lo"] <= true_gamma(law) <= iv["hi"], (name, row["gamma"], iv)
        assert iv["hi"] - iv["lo"] < 0.1  # and the interval says something
    assert result.params["gpt2"]["E"] == pytest.approx(E_TRUE, abs=0.1)


def test_multipliers_are_recovered_within_their_intervals(result):
    target = result.target_loss
    base = true_compute_at(LAWS["gpt2"], target)
    for name in ("llama", "performer"):
        row = result.row(name)
        true_k = true_compute_at(LAWS[name], target) / base
        iv = row["multiplier_interval"]
        assert iv["lo"] <= true_k <= iv["hi"], (name, row["multiplier"], iv, true_k)
    llama = result.row("llama")
    assert llama["multiplier_interval"]["lo"] > 1  # llama here needs more compute, and says so
    assert not llama["extrapolated"]


def test_differs_only_where_the_exponents_differ(result):
    assert result.row("llama")["exponent_differs"] is False
    assert result.row("performer")["exponent_differs"] is True
    assert result.baseline == "gpt2" and result.groups[0] == "gpt2"


def test_table_and_json(result):
    table = result.markdown()
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + len(LAWS)  # header + one row per variant
    assert "gpt2 (baseline)" in table and "IsoFLOP minima" in table
    perf = next(ln for ln in lines if ln.startswith("| performer"))
    assert "| yes |" in perf
    d = json.loads(json.dumps(result.to_dict()))
    assert set(d["params"]) == set(LAWS) and d["options"]["bootstrap"] == 200


def test_figure_has_one_curve_per_group(result, tmp_path):
    from scaling.plots.compare import frontiers_figure

    fig = frontiers_figure(result)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.get_legend().get_texts()) == len(LAWS)
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_too_few_budgets_is_one_clear_error():
    df = synthetic_runs(budgets=BUDGETS[:2])
    with pytest.raises(DataError, match=r"model.variant=gpt2: 2 compute budget\(s\).*at least 3"):
        compare(df, CompareOptions(bootstrap=0, nd=False))


def test_too_few_sizes_for_an_isoflop_minimum():
    df = synthetic_runs(sizes=2)
    with pytest.raises(DataError, match="1e\\+17 has 2 model size"):
        compare(df, CompareOptions(bootstrap=0, nd=False))


def test_missing_column_names_it():
    df = synthetic_runs().drop(columns=["C_attention"])
    with pytest.raises(DataError, match=r"column 'C_attention' \(--flops\) not in the table"):
        compare(df, CompareOptions(bootstrap=0, nd=False))


def test_script_reports_bad_input_in_one_line(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "analysis" / "compare_architectures.py"
    spec = importlib.util.spec_from_file_location("compare_architectures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    csv = tmp_path / "runs.csv"
    synthetic_runs().drop(columns=["eval_loss"]).to_csv(csv, index=False)
    assert module.main([str(csv), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'eval_loss' (--loss)" in err
