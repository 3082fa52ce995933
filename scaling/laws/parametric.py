"""Parametric fits of a form to a table (Chinchilla approach 3, Kaplan, power laws, BNSL)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from scaling.laws import allocation as alloc
from scaling.laws.bootstrap import bootstrap_raw, summarize
from scaling.laws.fitting import FitOptions, constraints, fit_raw
from scaling.laws.forms import Form
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData


def log_inputs(form: Form, data: LawData) -> np.ndarray:
    return np.log(np.stack([data.get(role) for role in form.inputs], axis=1))


def derived(form: Form, p: dict, k: float, at: dict[str, float]) -> dict[str, np.ndarray]:
    """Derived quantities for single parameters or bootstrap arrays: allocation and a forecast."""
    out: dict[str, np.ndarray] = {}
    if form.name == "chinchilla":
        C0 = at["C"]
        s = p["alpha"] + p["beta"]
        out["a"] = p["beta"] / s
        out["b"] = p["alpha"] / s
        N0 = alloc.optimal_n_batch(p, C0, k)
        D0 = alloc.optimal_d_batch(p, C0, k)
        out["N_opt"], out["D_opt"] = N0, D0
        out["L_opt"] = p["E"] + p["A"] / N0 ** p["alpha"] + p["B"] / D0 ** p["beta"]
    return out


def fit_parametric(
    form: Form,
    data: LawData,
    *,
    method: str | None = None,
    starts: np.ndarray | None = None,
    fixed: dict[str, float] | None = None,
    bounds: dict | None = None,
    options: FitOptions | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    at_C: float | None = None,
    extra_starts: int = 4,
) -> FitResult:
    """Robust multi-start fit of `form` (optionally bootstrapped) as a FitResult."""
    options = options or FitOptions()
    logX = log_inputs(form, data)
    logy = np.log(data.loss)
    if starts is None:
        starts = form.start_grid(logX, logy)
    starts = np.array(starts, dtype=np.float64)
    for i, v in constraints(form, fixed, bounds).fixed.items():
        starts[:, i] = v
    starts = np.unique(starts, axis=0)  # fixing a parameter collapses grid points
    raw = fit_raw(form, logX, logy, starts=starts, fixed=fixed, bounds=bounds, options=options)
    params = form.natural(raw.theta)
    k = alloc.flops_factor(data.N, data.D, data.C)
    C0 = float(at_C) if at_C is not None else _default_budget(data, k)
    at = {"C": C0}
    allocation: dict = {}
    derived_vals: dict = {}
    if form.name == "chinchilla":
        allocation = alloc.chinchilla_allocation(params, k)
        d = derived(form, params, k, at)
        derived_vals = {
            "at_C": C0,
            **{key: float(v) for key, v in d.items() if key not in ("a", "b")},
        }
    intervals: dict = {}
    diagnostics = dict(raw.diagnostics)
    flags = list(raw.flags)
    if bootstrap:
        bs = bootstrap_raw(
            form,
            logX,
            logy,
            raw,
            starts,
            B=bootstrap,
            seed=seed,
            fixed=fixed,
            bounds=bounds,
            options=options,
            extra_starts=extra_starts,
        )
        nat = form.natural_batch(bs["theta"])
        samples = {**nat, **derived(form, nat, k, at)}
        for name in fixed or {}:
            samples.pop(name, None)
        intervals = summarize(samples, level)
        frac = float(np.mean(bs["converged"]))
        diagnostics["bootstrap"] = {
            "resamples": bootstrap,
            "seed": seed,
            "starts_per_resample": bs["starts_per_resample"],
            "converged_fraction": frac,
            "samples": {name: nat[name].tolist() for name in nat if name not in (fixed or {})},
        }
        if frac < 0.95:
            flags.append(f"only {frac:.0%} of bootstrap refits converged")
    residual = np.exp(logy) - form.predict(params, **{r: data.get(r) for r in form.inputs})
    log_res = np.log(form.predict(params, **{r: data.get(r) for r in form.inputs})) - logy
    diagnostics["rmse_log"] = float(np.sqrt(np.mean(log_res**2)))
    diagnostics["max_abs_residual"] = float(np.max(np.abs(residual)))
    return FitResult(
        law=form.name,
        method=method
        or f"{form.name}: Huber(delta={options.delta:g}) on log residuals, summed; "
        f"L-BFGS from {len(starts)} starts",
        params=params,
        objective=raw.objective,
        converged=not flags,
        flags=flags,
        intervals=intervals,
        allocation=allocation,
        derived=derived_vals,
        diagnostics=diagnostics,
        columns=dict(data.columns),
        convention=data.convention,
        n_points=len(data),
        data_hash=data.hash(),
        options={
            **asdict(options),
            "starts": len(starts),
            "fixed": dict(fixed or {}),
            "bounds": {k2: list(v) for k2, v in (bounds or {}).items()},
            "bootstrap": bootstrap,
            "level": level,
            "flops_factor": k,
        },
        formula=form.formula,
    )


def _default_budget(data: LawData, k: float) -> float:
    if data.C is not None:
        return float(np.max(data.C))
    if data.N is not None and data.D is not None:
        return float(np.max(k * data.N * data.D))
    return float("nan")
