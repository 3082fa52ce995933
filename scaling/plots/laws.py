"""Figures of scaling-law fits (matplotlib, Agg): each function takes data and a FitResult and
returns a Figure, so `scaling fit --plot` and `scaling report` share them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from scaling.laws import allocation as alloc
from scaling.laws.forms import get_form
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData

UNITS = {"N": "parameters", "D": "tokens", "C": "FLOP", "loss": "nats/token"}
ROLE_NAMES = {"N": "model size N", "D": "training tokens D", "C": "training compute C"}


def axis_label(role: str, result: FitResult) -> str:
    """e.g. 'training compute C [FLOP] (C_kaplan)': quantity, unit, column/convention."""
    col = result.columns.get(role)
    label = f"{ROLE_NAMES.get(role, role)} [{UNITS.get(role, '')}]"
    return f"{label} ({col})" if col else label


def _loss_label(result: FitResult) -> str:
    return f"loss ({result.columns.get('loss', 'loss')})"


def _band(draws_SG: np.ndarray, level: float) -> np.ndarray | None:
    """Percentile band over bootstrap draws; draws with no finite value (a resample that did
    not converge) are left out, and no band is drawn when fewer than two remain."""
    ok = np.isfinite(draws_SG).all(axis=1)
    if ok.sum() < 2:
        return None
    return np.percentile(draws_SG[ok], [50 * (1 - level), 50 * (1 + level)], axis=0)


def _samples(result: FitResult) -> dict[str, np.ndarray] | None:
    s = result.diagnostics.get("bootstrap", {}).get("samples")
    return {k: np.asarray(v) for k, v in s.items()} if s else None


def _compute(data: LawData, result: FitResult) -> np.ndarray:
    if data.C is not None:
        return data.C
    k = result.options.get("flops_factor", alloc.DEFAULT_FLOPS_FACTOR)
    return k * data.get("N") * data.get("D")


def _new(ncols: int = 1, nrows: int = 1, size=(6.4, 4.6)) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(size[0] * ncols, size[1] * nrows),
        layout="constrained",
        squeeze=False,
    )
    return fig, axes


def loss_vs_compute(data: LawData, result: FitResult, level: float = 0.95) -> Figure:
    """Loss against compute, points coloured by N, with the fitted frontier and its band."""
    fig, ax = _new()
    ax = ax[0, 0]
    C = _compute(data, result)
    if data.N is not None:
        sc = ax.scatter(C, data.loss, c=np.log10(data.N), s=14, cmap="viridis", label="runs")
        fig.colorbar(sc, ax=ax, label=f"log10 N ({result.columns.get('N', 'N')})")
    else:
        ax.scatter(C, data.loss, s=14, label="runs")
    grid = np.geomspace(C.min() / 1.5, C.max() * 3, 200)
    k = result.options.get("flops_factor", alloc.DEFAULT_FLOPS_FACTOR)
    curve, band = None, None
    samples = _samples(result)
    if result.law == "chinchilla":
        p = result.params
        curve = _frontier(p, grid, k)
        if samples:
            draws = np.array(
                [
                    _frontier(dict(zip(samples, v, strict=True)), grid, k)
                    for v in zip(*samples.values(), strict=True)
                ]
            )
            band = _band(draws, level)
        label = "compute-optimal frontier L(N_opt, D_opt)"
    elif result.law == "power-c":
        form = get_form("power-c")
        curve = form.predict(result.params, C=grid)
        if samples:
            draws = np.array(
                [
                    form.predict(dict(zip(samples, v, strict=True)), C=grid)
                    for v in zip(*samples.values(), strict=True)
                ]
            )
            band = _band(draws, level)
        label = "fit L(C)"
    if curve is not None:
        ax.plot(grid, curve, color="C3", lw=2, label=label)
    if band is not None:
        ax.fill_between(
            grid, band[0], band[1], color="C3", alpha=0.25, label=f"{level:.0%} bootstrap interval"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label("C", result))
    ax.set_ylabel(_loss_label(result))
    ax.set_title(f"{result.law}: loss against compute ({result.n_points} runs)")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _frontier(p: dict, C: np.ndarray, k: float) -> np.ndarray:
    n = alloc.optimal_n_batch(p, C, k)
    d = (C / k) / n
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def isoflop_curves(data: LawData, result: FitResult) -> Figure:
    """IsoFLOP profiles: loss against N per budget, with the fitted parabolas and minima."""
    fig, ax = _new()
    ax = ax[0, 0]
    budgets = result.diagnostics.get("budgets", [])
    cmap = plt.get_cmap("plasma")
    logc = np.log10([b["C"] for b in budgets]) if budgets else np.array([0.0])
    span = max(np.ptp(logc), 1e-9)
    C = data.get("C")
    for b in budgets:
        color = cmap(0.85 * (np.log10(b["C"]) - logc.min()) / span)
        near = np.abs(np.log10(C / b["C"])) < 0.05
        ax.scatter(data.get("N")[near], data.loss[near], s=12, color=color)
        if "parabola" in b:
            lo, hi = b["window_log10N"]
            x = np.linspace(lo, hi, 100)
            ax.plot(
                10**x, np.polyval(b["parabola"], x), color=color, lw=1.5, label=f"C = {b['C']:.2g}"
            )
        ax.plot(b["N_opt"], b["L_min"], marker="*", ms=11, color=color, mec="k", ls="none")
    ax.set_xscale("log")
    ax.set_xlabel(axis_label("N", result))
    ax.set_ylabel(_loss_label(result))
    ax.set_title("IsoFLOP profiles, parabolas in log N and their minima (*)")
    if budgets:
        ax.legend(fontsize="x-small", ncol=2, title=f"budget [FLOP] ({result.columns.get('C')})")
    return fig


def optimal_allocation(result: FitResult, data: LawData | None = None) -> Figure:
    """N_opt(C) and D_opt(C): fitted power laws (and per-budget optima when the fit has them)."""
    fig, axes = _new(ncols=2)
    budgets = result.diagnostics.get("budgets", [])
    if budgets:
        Cb = np.array([b["C"] for b in budgets])
        lo, hi = Cb.min(), Cb.max()
    elif data is not None:
        Cd = _compute(data, result)
        lo, hi = Cd.min(), Cd.max()
    else:
        lo, hi = 1e18, 1e24
    grid = np.geomspace(lo / 3, hi * 30, 100)
    k = result.options.get("flops_factor", alloc.DEFAULT_FLOPS_FACTOR)
    if result.law == "chinchilla":
        n_line = alloc.optimal_n(result.params, grid, k)
        d_line = alloc.optimal_d(result.params, grid, k)
    else:
        n_line = result.params["G_N"] * grid ** result.params["a"]
        d_line = result.params["G_D"] * grid ** result.params["b"]
    for ax, role, line, key, expo in (
        (axes[0, 0], "N", n_line, "N_opt", "a"),
        (axes[0, 1], "D", d_line, "D_opt", "b"),
    ):
        ax.plot(
            grid,
            line,
            color="C0",
            lw=2,
            label=f"fit: {key} ∝ C^{result.allocation.get(expo, float('nan')):.3f}",
        )
        if budgets:
            ax.scatter(
                Cb, [b[key] for b in budgets], color="C1", zorder=3, label="per-budget optimum"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis_label("C", result))
        ax.set_ylabel(f"{key} [{UNITS[role]}]")
        ax.legend(fontsize="small")
    fig.suptitle(f"compute-optimal allocation ({result.law})")
    return fig


def residuals(data: LawData, result: FitResult) -> Figure:
    """Log residuals log L_fit - log L against the law's main input."""
    fig, ax = _new()
    ax = ax[0, 0]
    form = get_form(result.law)
    pred = form.predict(result.params, **{r: data.get(r) for r in form.inputs})
    res = np.log(pred) - np.log(data.loss)
    role = "C" if data.C is not None and len(form.inputs) > 1 else form.inputs[0]
    x = _compute(data, result) if role == "C" else data.get(role)
    ax.scatter(x, res, s=12)
    ax.axhline(0, color="k", lw=1)
    delta = result.options.get("delta")
    if delta:
        for s in (-delta, delta):
            ax.axhline(s, color="C3", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel(axis_label(role, result))
    ax.set_ylabel("log residual, log L_fit − log L")
    ax.set_title(f"{result.law} residuals (RMSE {np.sqrt(np.mean(res**2)):.3g})")
    return fig


def loss_vs_input(data: LawData, result: FitResult) -> Figure:
    """Single-input laws (power-n, power-d, bnsl): points and the fitted curve."""
    fig, ax = _new()
    ax = ax[0, 0]
    form = get_form(result.law)
    role = form.inputs[0]
    x = data.get(role)
    ax.scatter(x, data.loss, s=14, label="data")
    grid = np.geomspace(x.min() / 1.2, x.max() * 1.5, 300)
    ax.plot(
        grid,
        form.predict(result.params, **{role: grid}),
        color="C3",
        lw=2,
        label=f"fit: {form.formula}",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label(role, result))
    ax.set_ylabel(_loss_label(result))
    ax.legend(fontsize="small")
    return fig


def figure_for(result: FitResult, data: LawData) -> Figure:
    """The main figure for a fit (what `scaling fit --plot` writes)."""
    if result.law in ("chinchilla", "power-c"):
        return loss_vs_compute(data, result)
    if result.law == "isoflop":
        return isoflop_curves(data, result)
    if result.law == "envelope":
        return optimal_allocation(result, data)
    if result.law == "kaplan":
        return residuals(data, result)
    return loss_vs_input(data, result)
