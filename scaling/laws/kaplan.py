"""Kaplan et al. (2020) fits: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D and single-variable laws.

Kaplan's single-variable laws have no irreducible term, L(N) = (N_c/N)^α_N, which is the
power law with E fixed at 0 (`offset=False`); with `offset=True` E is fitted too.
"""

from __future__ import annotations

from scaling.laws.forms import KAPLAN, POWER_C, POWER_D, POWER_N
from scaling.laws.parametric import fit_parametric
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData

POWER_FORMS = {"N": POWER_N, "D": POWER_D, "C": POWER_C}


def fit_kaplan(data: LawData, **kwargs) -> FitResult:
    """Kaplan's joint L(N, D) (eq. 1.5), robust multi-start fit."""
    kwargs.setdefault("method", "kaplan L(N, D), Huber on log residuals, multi-start L-BFGS")
    return fit_parametric(KAPLAN, data, **kwargs)


def fit_power(data: LawData, x: str = "N", *, offset: bool = True, **kwargs) -> FitResult:
    """L(x) = E + A/x^k for x in N, D, C; `offset=False` fixes E = 0 (Kaplan's form)."""
    form = POWER_FORMS[x]
    if not offset:
        fixed = dict(kwargs.pop("fixed", None) or {})
        fixed["E"] = 0.0
        kwargs["fixed"] = fixed
    result = fit_parametric(form, data, **kwargs)
    if not offset:
        scale, k = (p.natural for p in form.params[1:])
        # Kaplan's N_c (or D_c, C_c): L = (x_c/x)^k, so x_c = scale^(1/k)
        result.derived[f"{x}_c"] = result.params[scale] ** (1.0 / result.params[k])
    return result
