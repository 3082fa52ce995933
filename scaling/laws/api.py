"""One entry point: fit a named law to a table of runs (what `scaling fit` calls)."""

from __future__ import annotations

import pandas as pd

from scaling.errors import ConfigError
from scaling.laws import chinchilla, kaplan
from scaling.laws.backtest import backtest
from scaling.laws.bnsl import fit_bnsl
from scaling.laws.result import FitResult
from scaling.laws.tables import LawData, select

LAWS = ("chinchilla", "kaplan", "power-n", "power-d", "power-c", "bnsl", "isoflop", "envelope")
# (roles needed, roles used when present, main input for `--holdout largest:K`)
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "chinchilla": (("N", "D"), ("C",), "C"),
    "kaplan": (("N", "D"), ("C",), "N"),
    "power-n": (("N",), (), "N"),
    "power-d": (("D",), (), "D"),
    "power-c": (("C",), (), "C"),
    "bnsl": (("D",), (), "D"),
    "isoflop": (("N", "D", "C"), (), "C"),
    "envelope": (("N", "D", "C"), (), "C"),
}


def fitter(law: str, *, bootstrap: int = 0, seed: int = 0, window: float | None = None):
    """A function LawData -> FitResult for `law`."""
    boot = {"bootstrap": bootstrap, "seed": seed}
    table = {
        "chinchilla": lambda d: chinchilla.approach3(d, **boot),
        "kaplan": lambda d: kaplan.fit_kaplan(d, **boot),
        "power-n": lambda d: kaplan.fit_power(d, "N", **boot),
        "power-d": lambda d: kaplan.fit_power(d, "D", **boot),
        "power-c": lambda d: kaplan.fit_power(d, "C", **boot),
        "bnsl": lambda d: fit_bnsl(d, **boot),
        "isoflop": lambda d: chinchilla.approach2(d, window=window),
        "envelope": lambda d: chinchilla.approach1(d),
    }
    if law not in table:
        raise ConfigError("--law", law, ", ".join(LAWS))
    return table[law]


def prepare(
    df: pd.DataFrame,
    law: str,
    *,
    loss: str | None = None,
    params: str | None = None,
    tokens: str | None = None,
    flops: str | None = None,
) -> LawData:
    """Validated columns for `law` (see scaling.laws.tables for the defaults)."""
    if law not in NEEDS:
        raise ConfigError("--law", law, ", ".join(LAWS))
    needs, wants, _ = NEEDS[law]
    return select(df, needs, wants=wants, loss=loss, params=params, tokens=tokens, flops=flops)


def fit_table(
    df: pd.DataFrame,
    law: str = "chinchilla",
    *,
    loss: str | None = None,
    params: str | None = None,
    tokens: str | None = None,
    flops: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    holdout: str | None = None,
    window: float | None = None,
) -> FitResult:
    """Fit `law` to the table; with `holdout`, fit the kept rows and score the held-out ones."""
    if bootstrap < 0:
        raise ConfigError("--bootstrap", bootstrap, "an integer >= 0")
    data = prepare(df, law, loss=loss, params=params, tokens=tokens, flops=flops)
    fit = fitter(law, bootstrap=bootstrap, seed=seed, window=window)
    if holdout:
        if law in ("isoflop", "envelope"):
            raise ConfigError("--holdout", holdout, "parametric laws only (not isoflop/envelope)")
        primary = NEEDS[law][2]
        if primary == "C" and data.C is None:
            primary = "N"
        return backtest(data, holdout, primary, fit)
    return fit(data)
