"""`build_report(sweep_dir, out_dir)`: a sweep's scaling section as HTML + Markdown + PNG + JSON.

Layout of `out_dir` (default `<sweep_dir>/report`): `report.html` and `report.md` (the same
text), `figures/*.png`, `fits/approach{1,2,3}.json` (FitResults), `allocation.csv`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from scaling import __version__
from scaling.io import atomic_write_bytes, atomic_write_text
from scaling.report.document import Bullets, Document, Heading, Image, Para, Table
from scaling.report.figures import make_figures
from scaling.report.study import LEVEL, PARAM_COLUMN, Study, analyse, exponent_interval

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
FIGURE_DPI = 110
CONVENTION_TEXT = {
    "kaplan": "C = 6·N·D (Kaplan et al. 2020), N non-embedding",
    "attention": "C = (6·N + 6·n_layers·context·d_model)·D: Kaplan's 6N plus the attention "
    "logit and value products, causally halved",
    "chinchilla": "Hoffmann et al. 2022 App. F: embeddings, logits, attention and softmax "
    "counted in full",
}
CAPTIONS = {
    "loss_curves": "Eval loss of every finished run against tokens seen and against training "
    "compute; colour is the IsoFLOP budget, dots mark the end of each run.",
    "isoflop": "IsoFLOP profiles: final loss against N at each budget, the approach-2 parabola "
    "(in log10 N) and its minimum (star).",
    "frontier": "Final losses against compute, the per-budget minima, and approach 3's "
    "compute-optimal loss L_opt(C) with its bootstrap band, extrapolated to 100x the largest "
    "budget.",
    "allocation": "Compute-optimal N_opt(C) and D_opt(C) from approach 2 (power laws through the "
    "IsoFLOP minima) and approach 3 (closed form from the parametric fit), with bootstrap bands.",
    "residuals": "Residuals of the approach-3 fit, log(predicted/observed), against N and D.",
}


def g(x: float, digits: int = 4) -> str:
    """A number for a table: significant digits, '—' for missing."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def interval_text(lo: float, hi: float, digits: int = 4) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"[{lo:.{digits}g}, {hi:.{digits}g}]"


def _constants_rows(study: Study) -> list[list[str]]:
    rows = []
    if "approach3" in study.fits:
        r = study.fits["approach3"]
        for name in ("E", "A", "B", "alpha", "beta"):
            iv = r.intervals.get(name, {})
            rows.append(
                [
                    "3 (parametric)",
                    name,
                    g(r.params[name], 6),
                    g(iv.get("se", np.nan)),
                    interval_text(iv.get("lo", np.nan), iv.get("hi", np.nan)),
                ]
            )
    for approach, label in (
        ("approach3", "3 (parametric)"),
        ("approach2", "2 (IsoFLOP)"),
        ("approach1", "1 (envelope)"),
    ):
        if approach not in study.fits:
            continue
        r = study.fits[approach]
        for name in ("a", "b"):
            lo, hi = exponent_interval(study, approach, name)
            se = r.intervals.get(name, {}).get("se", np.nan)
            if approach == "approach2" and study.samples2:
                v = study.samples2[name]
                se = float(np.nanstd(v, ddof=1))
            rows.append([label, name, g(r.allocation[name], 6), g(se), interval_text(lo, hi)])
    return rows


def _allocation_table(study: Study) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "approach": a.approach,
                "C_factor": a.factor,
                f"C_{study.convention}": a.C,
                "N_opt": a.N_opt,
                "N_lo": a.N_lo,
                "N_hi": a.N_hi,
                "D_opt": a.D_opt,
                "D_lo": a.D_lo,
                "D_hi": a.D_hi,
                "tokens_per_param": a.D_opt / a.N_opt,
            }
            for a in study.allocations
        ]
    )


def _runs_table(study: Study) -> Table:
    f = study.final.sort_values(["C_group", "N_nonembedding"])
    conv = study.convention
    rows = [
        [
            str(r["run_id"]),
            f"d{int(r['model.d_model'])} L{int(r['model.n_layers'])}",
            g(r["N_nonembedding"], 3),
            g(r["D"], 3),
            g(r[f"C_{conv}"], 3),
            f"{r['eval_loss']:.4f} ± {r['eval_loss_se']:.4f}",
        ]
        for _, r in f.iterrows()
    ]
    return Table(
        ["run", "shape", "N", "D (tokens)", f"C ({conv})", "final eval loss ± SE"],
        rows,
        caption=f"{len(rows)} finished runs (the fits use their final evaluation).",
    )


def _summary(study: Study) -> list:
    blocks = []
    n_done, n_out = len(study.final), len(study.excluded_runs)
    budgets = ", ".join(f"{c:.3g}" for c in study.budgets)
    text = (
        f"{n_done} finished runs at {len(study.budgets)} compute budgets ({budgets} FLOPs, "
        f"{study.convention} convention)"
        + (f"; {n_out} run(s) left out (listed below)." if n_out else "; no run left out.")
    )
    if "approach3" in study.fits:
        p = study.fits["approach3"].params
        text += (
            f" Approach 3 fits L(N, D) = {p['E']:.3f} + {p['A']:.4g}/N^{p['alpha']:.3f} + "
            f"{p['B']:.4g}/D^{p['beta']:.3f}."
        )
    blocks.append(Para(text))
    by = {(a.approach, a.factor): a for a in study.allocations}
    lines = []
    for factor in (10.0, 100.0):
        for approach in ("approach 2", "approach 3"):
            a = by.get((approach, factor))
            if a:
                lines.append(
                    f"{approach}, {factor:g}x the largest budget (C = {a.C:.3g}): N_opt = "
                    f"{a.N_opt:.3g} {interval_text(a.N_lo, a.N_hi, 3)}, D_opt = {a.D_opt:.3g} "
                    f"{interval_text(a.D_lo, a.D_hi, 3)} ({a.D_opt / a.N_opt:.3g} tokens per "
                    "parameter)"
                )
    if lines:
        blocks += [
            Para(f"Compute-optimal allocation extrapolated ({LEVEL:.0%} intervals):"),
            Bullets(lines),
        ]
    if study.disagreements:
        blocks.append(Para(" ".join(study.disagreements)))
    elif study.agreements:
        blocks.append(Para(" ".join(study.agreements)))
    return blocks


def _diagnostics(study: Study) -> list[str]:
    out = []
    for name, res in study.fits.items():
        state = "converged" if res.converged else "flagged"
        flags = "; ".join(res.flags) if res.flags else "no flags"
        out.append(f"{name}: {state} ({flags})")
    for name, err in study.fit_errors.items():
        out.append(f"{name}: not fitted: {err}")
    for b in study.excluded_budgets:
        out.append(
            f"budget C = {b['C']:.3g} ({b['runs']} runs) left out of approach 2: {b['reason']}"
        )
    if study.bootstrap:
        used2 = int(np.isfinite(study.samples2["a"]).sum()) if study.samples2 else 0
        boot3 = study.fits.get("approach3")
        frac3 = boot3.diagnostics.get("bootstrap", {}).get("converged_fraction") if boot3 else None
        out.append(
            f"bootstrap: {study.bootstrap} resamples; approach 3 refits that converged: "
            + (f"{frac3:.0%}" if frac3 is not None else "—")
            + f"; approach 2 resamples with an interior minimum at every budget: {used2}"
        )
    return out


def render(study: Study, figure_files: dict[str, str]) -> Document:
    """The report's text, tables and figure references."""
    conv = study.convention
    doc = Document(f"Scaling study: {study.name}")
    doc.add(Heading("Summary"), *_summary(study))
    doc.add(
        Heading("Conventions"),
        Bullets(
            [
                f"N = {PARAM_COLUMN} (Kaplan et al.: parameters without embeddings and positions).",
                "D = training tokens seen.",
                f"C = C_{conv}: {CONVENTION_TEXT.get(conv, conv)}.",
                f"Approach 3 converts C to (N, D) with C = k·N·D, k = {study.flops_factor:.4g} "
                "(median of C/(N·D) over the runs; exactly 6 only under the kaplan convention).",
                "Loss = final eval loss (cross-entropy, nats per token) of each finished run.",
                f"Intervals are {LEVEL:.0%} bootstrap percentile intervals over runs "
                f"({study.bootstrap} resamples).",
            ]
        ),
    )
    doc.add(Heading("Figures"))
    for name, path in figure_files.items():
        doc.add(Image(path, CAPTIONS.get(name, name)))
    doc.add(
        Heading("Fitted constants"),
        Table(
            ["approach", "quantity", "value", "SE", f"{LEVEL:.0%} interval"],
            _constants_rows(study),
            caption="a and b are the exponents of N_opt ∝ C^a and D_opt ∝ C^b.",
        ),
    )
    rows = [
        [
            a.approach,
            f"{a.factor:g}x",
            g(a.C, 3),
            g(a.N_opt, 4),
            interval_text(a.N_lo, a.N_hi, 3),
            g(a.D_opt, 4),
            interval_text(a.D_lo, a.D_hi, 3),
            g(a.D_opt / a.N_opt, 3),
        ]
        for a in study.allocations
    ]
    doc.add(
        Heading("Compute-optimal allocation"),
        Table(
            ["approach", "budget", f"C ({conv})", "N_opt", "interval", "D_opt", "interval", "D/N"],
            rows,
            caption="At the largest budget of the sweep and extrapolated 10x and 100x.",
        ),
    )
    if study.disagreements or study.agreements:
        doc.add(
            Heading("Do the approaches agree?"), Bullets(study.disagreements + study.agreements)
        )
    doc.add(Heading("Runs"), _runs_table(study))
    if study.excluded_runs:
        doc.add(
            Heading("Runs left out", 3),
            Bullets(
                [
                    f"{e['run_id']} ({e['shape']}): {e['state']}"
                    + (f" — {e['note']}" if e["note"] else "")
                    for e in study.excluded_runs
                ]
            ),
        )
    doc.add(Heading("Diagnostics"), Bullets(_diagnostics(study)))
    doc.add(
        Heading("Provenance"),
        Para(
            f"scaling {__version__}; sweep folder {study.sweep_dir}; data hash "
            f"{study.data.hash()}. The fits are saved as FitResult JSON in fits/."
        ),
    )
    return doc


def build_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    starts: np.ndarray | None = None,
) -> Path:
    """Analyse a sweep folder and write its report; returns the path of report.html."""
    study = analyse(sweep_dir, bootstrap=bootstrap, seed=seed, starts=starts)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "fits").mkdir(parents=True, exist_ok=True)
    files = {}
    for name, fig in make_figures(study).items():
        rel = f"figures/{name}.png"
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=FIGURE_DPI)
        plt.close(fig)
        atomic_write_bytes(out / rel, buf.getvalue())
        files[name] = rel
    for name, res in study.fits.items():
        res.save(out / "fits" / f"{name}.json")
    atomic_write_bytes(
        out / "allocation.csv", _allocation_table(study).to_csv(index=False).encode("utf-8")
    )
    doc = render(study, files)
    atomic_write_text(out / REPORT_MD, doc.to_markdown())
    atomic_write_text(out / REPORT_HTML, doc.to_html())
    return out / REPORT_HTML
