"""A sweep folder's scaling study: its runs, Chinchilla approaches 1-3, intervals, extrapolation.

`analyse(sweep_dir)` reads the finished runs (`scaling.sweep.results.load_results`), lists what
it leaves out (diverged, failed, unfinished runs; IsoFLOP budgets without an interior minimum)
and fits with the analysis layer (`scaling.laws`): approach 1 (envelope), approach 2 (IsoFLOP
parabolas) and approach 3 (parametric, bootstrapped). N is `N_nonembedding`; C is the sweep's
own FLOP convention (the one its budgets were set in), so each IsoFLOP group has one budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.errors import ConfigError, DataError, FitError
from scaling.laws import allocation as alloc
from scaling.laws.bootstrap import summarize
from scaling.laws.chinchilla import (
    MIN_BUDGET_RUNS,
    approach1,
    approach2,
    approach2_bootstrap,
    approach3,
    budget_minimum,
    group_budgets,
)
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData, select
from scaling.sweep.results import load_results
from scaling.sweep.status import sweep_status
from scaling.sweep.store import PLAN_FILE

PARAM_COLUMN = "N_nonembedding"
EXTRAPOLATION_FACTORS = (1.0, 10.0, 100.0)  # x the largest budget
LEVEL = 0.95


@dataclass
class Allocation:
    """Compute-optimal N and D at one budget from one approach, with a percentile interval."""

    approach: str
    C: float
    factor: float  # C / largest budget of the sweep
    N_opt: float
    N_lo: float
    N_hi: float
    D_opt: float
    D_lo: float
    D_hi: float


@dataclass
class Study:
    """Everything the report shows, computed once."""

    sweep_dir: Path
    name: str
    convention: str
    curves: pd.DataFrame  # every evaluation of the finished runs
    final: pd.DataFrame  # one row per finished run (its last evaluation)
    data: LawData  # the final rows as fit inputs (loss, N, D, C)
    excluded_runs: list[dict] = field(default_factory=list)
    excluded_budgets: list[dict] = field(default_factory=list)
    fits: dict[str, FitResult] = field(default_factory=dict)  # approach1/2/3
    fit_errors: dict[str, str] = field(default_factory=dict)
    samples3: dict[str, np.ndarray] = field(default_factory=dict)  # bootstrap params, appr. 3
    samples2: dict[str, np.ndarray] = field(default_factory=dict)  # bootstrap (a, b, logG), appr. 2
    flops_factor: float = 6.0  # k in C = k N D (median over runs), for approach 3's allocation
    allocations: list[Allocation] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    agreements: list[str] = field(default_factory=list)
    bootstrap: int = 0

    @property
    def budgets(self) -> np.ndarray:
        return np.array(sorted({round(float(c), 6) for c in self.final["C_group"]}))

    @property
    def c_max(self) -> float:
        return float(np.max(self.data.C))


def read_convention(sweep_dir: Path, final: pd.DataFrame) -> str:
    """The FLOP convention the sweep's budgets were set in (plan.json), else `attention`."""
    plan = sweep_dir / PLAN_FILE
    if plan.is_file():
        import json

        conv = json.loads(plan.read_text(encoding="utf-8")).get("convention")
        if conv:
            return str(conv)
    if "sweep.convention" in final and final["sweep.convention"].notna().any():
        return str(final["sweep.convention"].dropna().iloc[0])
    return "attention"


def _check_folder(sweep_dir: Path) -> None:
    if not sweep_dir.exists():
        raise DataError(f"SWEEP_DIR = {str(sweep_dir)!r} does not exist; give a sweep folder")
    if not sweep_dir.is_dir():
        raise DataError(f"SWEEP_DIR = {str(sweep_dir)!r} is not a folder; give a sweep folder")
    if not (sweep_dir / "runs").is_dir():
        raise DataError(
            f"SWEEP_DIR = {str(sweep_dir)!r} has no runs/ folder; give the --out folder of "
            "`scaling sweep run`"
        )


def _excluded_runs(sweep_dir: Path) -> list[dict]:
    """Runs that are not `done`: diverged (a result, left out of fits), failed or unfinished."""
    out = []
    for r in sweep_status(sweep_dir):
        if r.state != "done":
            out.append({"run_id": r.run_id, "state": r.state, "shape": r.shape, "note": r.error})
    return out


def load_study_tables(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(every evaluation, final rows, excluded runs) of the finished runs; one-line errors."""
    root = Path(sweep_dir)
    _check_folder(root)
    excluded = _excluded_runs(root)
    curves = load_results(root, view="all")
    final = load_results(root, view="final")
    if final.empty:
        states = ", ".join(sorted({e["state"] for e in excluded})) or "none"
        raise DataError(
            f"SWEEP_DIR = {str(root)!r} has no finished runs (states of its runs: {states}); "
            "run `scaling sweep run` on it first"
        )
    return curves, final, excluded


def analyse(
    sweep_dir: str | Path,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    starts: np.ndarray | None = None,
) -> Study:
    """Load a sweep folder and run the three approaches with intervals (see module docstring)."""
    if bootstrap < 0:
        raise ConfigError("bootstrap", bootstrap, "a non-negative integer")
    root = Path(sweep_dir)
    curves, final, excluded = load_study_tables(root)
    convention = read_convention(root, final)
    c_col = f"C_{convention}"
    data = select(
        final, ("N", "D", "C"), loss="eval_loss", params=PARAM_COLUMN, tokens="D", flops=c_col
    )
    labels = group_budgets(data.C)
    group_c = {g: float(np.exp(np.mean(np.log(data.C[labels == g])))) for g in np.unique(labels)}
    final = final.reset_index(drop=True).assign(C_group=[group_c[g] for g in labels])
    curves = curves.merge(final[["run_id", "C_group"]], on="run_id", how="left")
    study = Study(
        sweep_dir=root,
        name=root.name,
        convention=convention,
        curves=curves,
        final=final,
        data=data,
        excluded_runs=excluded,
        bootstrap=bootstrap,
        flops_factor=alloc.flops_factor(data.N, data.D, data.C),
    )
    _fit_approach1(study)
    _fit_approach2(study, labels, bootstrap, seed)
    _fit_approach3(study, bootstrap, seed, starts)
    _extrapolate(study)
    _compare(study)
    return study


def _fit_approach1(study: Study) -> None:
    try:
        study.fits["approach1"] = approach1(study.data)
    except FitError as e:
        study.fit_errors["approach1"] = str(e)


def _fit_approach2(study: Study, labels: np.ndarray, bootstrap: int, seed: int) -> None:
    """IsoFLOP parabolas on the budgets that have an interior minimum; the rest are listed."""
    data = study.data
    keep = np.zeros(len(data), dtype=bool)
    groups = []
    for g in np.unique(labels):
        idx = np.nonzero(labels == g)[0]
        c = float(np.exp(np.mean(np.log(data.C[idx]))))
        if idx.size < MIN_BUDGET_RUNS:
            study.excluded_budgets.append(
                {"C": c, "runs": int(idx.size), "reason": f"fewer than {MIN_BUDGET_RUNS} runs"}
            )
            continue
        m, why = budget_minimum(data, idx)
        if m is None:
            study.excluded_budgets.append({"C": c, "runs": int(idx.size), "reason": why})
            continue
        keep[idx] = True
        groups.append(idx)
    try:
        study.fits["approach2"] = approach2(data.subset(keep))
    except FitError as e:
        study.fit_errors["approach2"] = str(e)
        return
    if bootstrap:
        study.samples2 = approach2_bootstrap(data, groups, bootstrap, seed)
        ints = summarize({k: study.samples2[k] for k in ("a", "b")}, LEVEL)
        study.fits["approach2"].diagnostics["bootstrap"] = {
            "resamples": bootstrap,
            "seed": seed,
            "kind": "runs resampled within each budget; parabolas and power laws refitted",
            "used": int(np.isfinite(study.samples2["a"]).sum()),
            "intervals": ints,
        }


def _fit_approach3(study: Study, bootstrap: int, seed: int, starts: np.ndarray | None) -> None:
    try:
        res = approach3(study.data, bootstrap=bootstrap, seed=seed, at_C=study.c_max, starts=starts)
    except FitError as e:
        study.fit_errors["approach3"] = str(e)
        return
    study.fits["approach3"] = res
    stored = res.diagnostics.get("bootstrap", {}).get("samples") or {}
    study.samples3 = {k: np.asarray(v, dtype=np.float64) for k, v in stored.items()}


def _interval(v: np.ndarray) -> tuple[float, float]:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan"), float("nan")
    q = 50 * (1 - LEVEL)
    return float(np.percentile(v, q)), float(np.percentile(v, 100 - q))


def _extrapolate(study: Study) -> None:
    """N_opt, D_opt at 1x, 10x, 100x the largest budget from approaches 2 and 3."""
    k = study.flops_factor
    for factor in EXTRAPOLATION_FACTORS:
        C = study.c_max * factor
        if "approach2" in study.fits:
            p = study.fits["approach2"].params
            n = p["G_N"] * C ** p["a"]
            d = p["G_D"] * C ** p["b"]
            s = study.samples2
            n_lo = n_hi = d_lo = d_hi = float("nan")
            if s:
                n_lo, n_hi = _interval(np.exp(s["logG_N"] + s["a"] * np.log(C)))
                d_lo, d_hi = _interval(np.exp(s["logG_D"] + s["b"] * np.log(C)))
            study.allocations.append(
                Allocation("approach 2", C, factor, n, n_lo, n_hi, d, d_lo, d_hi)
            )
        if "approach3" in study.fits:
            p = study.fits["approach3"].params
            n = float(alloc.optimal_n(p, C, k))
            d = float(alloc.optimal_d(p, C, k))
            s = study.samples3
            n_lo = n_hi = d_lo = d_hi = float("nan")
            if s:
                n_lo, n_hi = _interval(alloc.optimal_n_batch(s, C, k))
                d_lo, d_hi = _interval(alloc.optimal_d_batch(s, C, k))
            study.allocations.append(
                Allocation("approach 3", C, factor, n, n_lo, n_hi, d, d_lo, d_hi)
            )


def exponent_interval(study: Study, approach: str, name: str) -> tuple[float, float]:
    """The (lo, hi) interval of allocation exponent `a` or `b` for approach 2 or 3."""
    if approach == "approach2" and study.samples2:
        return _interval(study.samples2[name])
    if approach == "approach3" and study.samples3:
        s = study.samples3
        tot = s["alpha"] + s["beta"]
        return _interval(s["beta"] / tot if name == "a" else s["alpha"] / tot)
    iv = study.fits[approach].intervals.get(name, {}) if approach in study.fits else {}
    return float(iv.get("lo", np.nan)), float(iv.get("hi", np.nan))


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool | None:
    if not all(np.isfinite(x) for x in (*a, *b)):
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def _compare(study: Study) -> None:
    """Sentences where approaches 2 and 3 disagree beyond their intervals (and where not)."""
    if not ("approach2" in study.fits and "approach3" in study.fits):
        return
    pct = f"{LEVEL:.0%}"
    for name, what in (("a", "N_opt ∝ C^a"), ("b", "D_opt ∝ C^b")):
        i2, i3 = (
            exponent_interval(study, "approach2", name),
            exponent_interval(study, "approach3", name),
        )
        v2 = study.fits["approach2"].allocation[name]
        v3 = study.fits["approach3"].allocation[name]
        ok = _overlap(i2, i3)
        text = (
            f"the exponent {name} ({what}): approach 2 gives {v2:.3f} [{i2[0]:.3f}, {i2[1]:.3f}], "
            f"approach 3 gives {v3:.3f} [{i3[0]:.3f}, {i3[1]:.3f}]"
        )
        if ok is False:
            study.disagreements.append(
                f"Approaches 2 and 3 disagree beyond their {pct} intervals on {text}."
            )
        elif ok:
            study.agreements.append(
                f"Approaches 2 and 3 agree within their {pct} intervals on {text}."
            )
    by = {(a.approach, a.factor): a for a in study.allocations}
    for factor in EXTRAPOLATION_FACTORS[1:]:
        a2, a3 = by.get(("approach 2", factor)), by.get(("approach 3", factor))
        if not (a2 and a3):
            continue
        for q in ("N", "D"):
            i2 = (getattr(a2, f"{q}_lo"), getattr(a2, f"{q}_hi"))
            i3 = (getattr(a3, f"{q}_lo"), getattr(a3, f"{q}_hi"))
            if _overlap(i2, i3) is False:
                study.disagreements.append(
                    f"At {factor:g}x the largest budget (C = {a2.C:.3g}), approaches 2 and 3 "
                    f"disagree beyond their {pct} intervals on {q}_opt: "
                    f"{getattr(a2, f'{q}_opt'):.3g} [{i2[0]:.3g}, {i2[1]:.3g}] vs "
                    f"{getattr(a3, f'{q}_opt'):.3g} [{i3[0]:.3g}, {i3[1]:.3g}]."
                )
