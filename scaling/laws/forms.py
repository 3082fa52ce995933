"""Functional forms of scaling laws, each predicting log-loss from log-inputs in JAX.

A form is fitted in a *raw* parametrisation (log of every scale constant, exponents as is), the
log-sum-exp form of Hoffmann et al.: L = E + A/N^α + B/D^β becomes
log L = lse(a - α log N, b - β log D, e). `natural()` turns raw values into the named constants
(`E`, `A`, `B`, `alpha`, `beta`, ...) that results report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from jax.nn import softplus

from scaling.errors import ConfigError

LogPredict = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]
GridFn = Callable[[np.ndarray, np.ndarray], dict[str, Sequence[float]]]


@dataclass(frozen=True)
class RawParam:
    """A fitted coordinate: raw name, the natural constant it maps to, whether raw = log."""

    raw: str
    natural: str
    log: bool = False


@dataclass(frozen=True)
class Form:
    """A law: input names (table roles), parameters, log-prediction, default start grid."""

    name: str
    inputs: tuple[str, ...]
    params: tuple[RawParam, ...]
    log_predict: LogPredict  # (theta_P, logX_nI) -> logL_n
    grid: GridFn  # (logX_nI, logy_n) -> {raw name: values}; the start grid is their product
    formula: str = ""
    default_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def raw_names(self) -> tuple[str, ...]:
        return tuple(p.raw for p in self.params)

    @property
    def natural_names(self) -> tuple[str, ...]:
        return tuple(p.natural for p in self.params)

    def natural(self, theta_P: Sequence[float]) -> dict[str, float]:
        """Raw vector -> {natural name: value} (exp of the log coordinates)."""
        theta = np.asarray(theta_P, dtype=np.float64)
        return {
            p.natural: float(np.exp(v)) if p.log else float(v)
            for p, v in zip(self.params, theta, strict=True)
        }

    def natural_batch(self, theta_BP: np.ndarray) -> dict[str, np.ndarray]:
        """Like `natural` for a batch of raw vectors (rows)."""
        theta = np.asarray(theta_BP, dtype=np.float64)
        return {
            p.natural: np.exp(theta[:, i]) if p.log else theta[:, i]
            for i, p in enumerate(self.params)
        }

    def raw_value(self, natural_name: str, value: float, fixed: bool = False) -> tuple[int, float]:
        """(index, raw value) of a natural constant, for fixed values and bounds."""
        for i, p in enumerate(self.params):
            if natural_name in (p.natural, p.raw):
                if p.log and natural_name == p.natural:
                    if value == 0 and fixed:
                        return i, -math.inf  # a term fixed at zero (e.g. Kaplan's E = 0)
                    if not value > 0:
                        raise ConfigError(natural_name, value, "a positive number (it is e^raw)")
                    return i, float(np.log(value))
                return i, float(value)
        raise ConfigError("parameter", natural_name, ", ".join(self.natural_names))

    def start_grid(self, logX_nI: np.ndarray, logy_n: np.ndarray) -> np.ndarray:
        """The default grid of starting points, shape (S, P), in raw coordinates."""
        values = self.grid(logX_nI, logy_n)
        axes = [np.asarray(values[p.raw], dtype=np.float64) for p in self.params]
        return np.array(list(itertools.product(*axes)), dtype=np.float64)

    def predict(self, params: dict[str, float], **inputs: np.ndarray) -> np.ndarray:
        """Loss predicted at the given inputs (e.g. N=..., D=...) from natural constants."""
        missing = [k for k in self.inputs if k not in inputs]
        if missing:
            raise ConfigError("inputs", sorted(inputs), f"{', '.join(self.inputs)} for {self.name}")
        with np.errstate(divide="ignore"):  # a constant fixed at 0 has raw value -inf
            theta = np.array(
                [np.log(params[p.natural]) if p.log else params[p.natural] for p in self.params]
            )
        cols = [np.log(np.asarray(inputs[k], dtype=np.float64)) for k in self.inputs]
        logX = np.stack(np.broadcast_arrays(*cols), axis=-1)
        shape = logX.shape[:-1]
        out = _eval_log_predict(self, theta, logX.reshape(-1, len(self.inputs)))
        return np.exp(out).reshape(shape)


def _eval_log_predict(form: Form, theta_P: np.ndarray, logX_nI: np.ndarray) -> np.ndarray:
    import jax

    with jax.enable_x64(True):
        out = form.log_predict(jnp.asarray(theta_P, jnp.float64), jnp.asarray(logX_nI, jnp.float64))
        return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------- Chinchilla / Hoffmann


def _chinchilla_logpred(theta, logX):
    e, a, b, alpha, beta = theta
    logN, logD = logX[:, 0], logX[:, 1]
    # log(e^e + e^(a - α log N) + e^(b - β log D)); written out, it is ~5x faster than logsumexp.
    # Terms that overflow give inf, which the fitter's line search rejects.
    return jnp.log(jnp.exp(e) + jnp.exp(a - alpha * logN) + jnp.exp(b - beta * logD))


def _hoffmann_grid(_logX, _logy):
    # Hoffmann et al. 2022 (App. D.2), as in Epoch's replication: 5*5*5*6*6 = 4,500 starts.
    return {
        "alpha": np.arange(0.0, 2.5, 0.5),
        "beta": np.arange(0.0, 2.5, 0.5),
        "e": np.arange(-1.0, 1.5, 0.5),
        "a": np.arange(0.0, 30.0, 5.0),
        "b": np.arange(0.0, 30.0, 5.0),
    }


CHINCHILLA = Form(
    name="chinchilla",
    inputs=("N", "D"),
    params=(
        RawParam("e", "E", True),
        RawParam("a", "A", True),
        RawParam("b", "B", True),
        RawParam("alpha", "alpha"),
        RawParam("beta", "beta"),
    ),
    log_predict=_chinchilla_logpred,
    grid=_hoffmann_grid,
    formula="L(N, D) = E + A/N^alpha + B/D^beta",
)


# ---------------------------------------------------------------- single-variable power laws


def _power_logpred(theta, logX):
    e, a, k = theta
    return jnp.log(jnp.exp(e) + jnp.exp(a - k * logX[:, 0]))


def _power_grid_for(scale: str, exponent: str):
    def grid(_logX, _logy):
        return {
            "e": np.arange(-1.0, 1.5, 0.5),
            scale: np.arange(0.0, 30.0, 2.5),
            exponent: np.arange(0.0, 2.25, 0.25),
        }

    return grid


def _power_form(name: str, x: str, scale: str, exponent: str, scale_nat: str) -> Form:
    return Form(
        name=name,
        inputs=(x,),
        params=(
            RawParam("e", "E", True),
            RawParam(scale, scale_nat, True),
            RawParam(exponent, exponent),
        ),
        log_predict=_power_logpred,
        grid=_power_grid_for(scale, exponent),
        formula=f"L({x}) = E + {scale_nat}/{x}^{exponent}",
    )


POWER_N = _power_form("power-n", "N", "a", "alpha", "A")
POWER_D = _power_form("power-d", "D", "b", "beta", "B")
POWER_C = _power_form("power-c", "C", "a_c", "gamma", "A_C")


# ---------------------------------------------------------------- Kaplan et al. 2020 L(N, D)


def _kaplan_logpred(theta, logX):
    log_nc, log_dc, alpha_n, alpha_d = theta
    logN, logD = logX[:, 0], logX[:, 1]
    return alpha_d * jnp.logaddexp((alpha_n / alpha_d) * (log_nc - logN), log_dc - logD)


def _kaplan_grid(_logX, _logy):
    return {
        "log_Nc": np.arange(15.0, 45.0, 5.0),
        "log_Dc": np.arange(15.0, 45.0, 5.0),
        "alpha_N": np.array([0.03, 0.07, 0.15, 0.3, 0.6]),
        "alpha_D": np.array([0.03, 0.07, 0.15, 0.3, 0.6]),
    }


KAPLAN = Form(
    name="kaplan",
    inputs=("N", "D"),
    params=(
        RawParam("log_Nc", "N_c", True),
        RawParam("log_Dc", "D_c", True),
        RawParam("alpha_N", "alpha_N"),
        RawParam("alpha_D", "alpha_D"),
    ),
    log_predict=_kaplan_logpred,
    grid=_kaplan_grid,
    formula="L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D",
    default_bounds={"alpha_D": (1e-3, 5.0), "alpha_N": (1e-4, 5.0)},
)


# ---------------------------------------------------------------- broken power law (Caballero)


def bnsl(breaks: int = 1, x: str = "D") -> Form:
    """Broken neural scaling law with `breaks` breaks (Caballero et al. 2023, eq. 1):
    y = a + b x^(-c0) prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i)."""
    if breaks < 1:
        raise ConfigError("breaks", breaks, "an integer >= 1")
    params = [RawParam("log_a", "a", True), RawParam("log_b", "b", True), RawParam("c0", "c0")]
    for i in range(1, breaks + 1):
        params += [
            RawParam(f"c{i}", f"c{i}"),
            RawParam(f"log_d{i}", f"d{i}", True),
            RawParam(f"log_f{i}", f"f{i}", True),
        ]

    def logpred(theta, logX):
        lx = logX[:, 0]
        body = theta[1] - theta[2] * lx
        for i in range(breaks):
            c, ld, lf = theta[3 + 3 * i], theta[4 + 3 * i], theta[5 + 3 * i]
            f = jnp.exp(lf)
            body = body - c * f * softplus((lx - ld) / f)
        return jnp.logaddexp(theta[0], body)

    def grid(logX, logy):
        lo, hi = float(np.min(logX[:, 0])), float(np.max(logX[:, 0]))
        ymin, ymax = float(np.min(logy)), float(np.max(logy))
        g = {
            "log_a": np.array([ymin - 6.0, ymin - 2.0, ymin - 0.5]),
            "log_b": np.array([ymax, ymax + 0.5 * max(hi, 1.0)]),
            "c0": np.array([0.0, 0.5]),
        }
        ds = np.linspace(lo, hi, 5 if breaks == 1 else 3)
        for i in range(1, breaks + 1):
            g[f"c{i}"] = np.array([0.5, 2.0, 8.0])
            g[f"log_d{i}"] = ds
            g[f"log_f{i}"] = np.array([-3.0, -1.0, 0.5])
        return g

    return Form(
        name=f"bnsl{breaks}" if breaks > 1 else "bnsl",
        inputs=(x,),
        params=tuple(params),
        log_predict=logpred,
        grid=grid,
        formula=f"y = a + b {x}^-c0 prod_i (1 + ({x}/d_i)^(1/f_i))^(-c_i f_i), {breaks} break(s)",
    )


FORMS: dict[str, Form] = {
    f.name: f for f in (CHINCHILLA, POWER_N, POWER_D, POWER_C, KAPLAN, bnsl(1))
}


def get_form(name: str) -> Form:
    """Form by name (`chinchilla`, `kaplan`, `power-n`, `power-d`, `power-c`, `bnsl`, `bnslK`)."""
    if name in FORMS:
        return FORMS[name]
    if name.startswith("bnsl") and name[4:].isdigit():
        return bnsl(int(name[4:]))
    raise ConfigError("law", name, ", ".join(FORMS))
