"""Broken neural scaling laws (Caballero et al. 2023) and their comparison with one power law."""

from __future__ import annotations

import numpy as np

from scaling.laws.fitting import FitOptions
from scaling.laws.forms import POWER_D, bnsl
from scaling.laws.parametric import fit_parametric
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData


def fit_bnsl(data: LawData, breaks: int = 1, **kwargs) -> FitResult:
    """Fit y = a + b x^-c0 prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i) to (D, loss), multi-start."""
    kwargs.setdefault("options", FitOptions(max_iter=1000))
    kwargs.setdefault("method", f"broken power law, {breaks} break(s); Huber on log residuals")
    return fit_parametric(bnsl(breaks), data, **kwargs)


def extrapolation_errors(train: LawData, test: LawData, breaks: int = 1) -> dict[str, float]:
    """Held-out RMSE of log-loss for a BNSL and a power law with offset, both fit on `train`."""
    out = {}
    for name, result, form in (
        ("bnsl", fit_bnsl(train, breaks), bnsl(breaks)),
        ("power_law", fit_parametric(POWER_D, train), POWER_D),
    ):
        pred = form.predict(result.params, D=test.get("D"))
        out[name] = float(np.sqrt(np.mean((np.log(pred) - np.log(test.loss)) ** 2)))
    return out
