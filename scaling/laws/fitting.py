"""Robust multi-start fitting: Huber loss on log residuals, summed, minimised by a batched L-BFGS.

The starts run together in one jitted JAX float64 program (`jax.vmap` of one L-BFGS step inside a
`lax.while_loop`) over a pool of lanes that takes the next start whenever one ends; the line
search backtracks one trial per iteration (Armijo's condition), so every lane costs one
value-and-gradient evaluation per iteration. float64 is switched on only inside these functions
(`jax.enable_x64`), so float32 training elsewhere is untouched.

Fixed parameters are removed from the search; bounds are imposed by smooth transforms
(sigmoid between two bounds, softplus against one). After the run, `check_convergence` looks at
the best start's stopping reason and gradient and at the agreement of the best starts, and
flags (or raises) rather than returning silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import expit

from scaling.cache import enable_compilation_cache
from scaling.errors import ConfigError, FitError
from scaling.laws.forms import Form

STATUS = {0: "gradient", 1: "objective", 2: "max_iter", 3: "line_search"}
_MAX_LANES = 1024  # starts solved at once; more wait in a queue for a free lane
_MIN_LANES = 64  # smallest pool: few sizes, few compilations
_POINT_BUCKET = 64


@dataclass(frozen=True)
class FitOptions:
    """Options of the robust fit; all are recorded in the FitResult."""

    delta: float = 1e-3  # Huber threshold on log residuals
    max_iter: int = 500
    history: int = 10  # L-BFGS memory
    gtol: float = 1e-11  # stop a start when max|grad| <= gtol
    ftol: float = 1e-10  # ... or when the relative decrease stays <= ftol for `patience` steps
    patience: int = 5
    agree_rtol: float = 1e-6  # starts within this relative objective of the best "reached it"
    agree_atol: float = 1e-3  # ... and must agree on raw parameters within this
    grad_rtol: float = 1e-4  # flag when max|grad| at the best start exceeds grad_rtol * objective
    grad_atol: float = 1e-8  # ... and grad_atol
    on_fail: str = "flag"  # "flag" | "raise"

    def __post_init__(self):
        if not self.delta > 0:
            raise ConfigError("delta", self.delta, "a positive number")
        if self.on_fail not in ("flag", "raise"):
            raise ConfigError("on_fail", self.on_fail, "flag, raise")
        if self.max_iter < 1 or self.history < 1:
            raise ConfigError("max_iter/history", (self.max_iter, self.history), ">= 1")


@dataclass
class Constraints:
    """Fixed raw values and bounds (raw coordinates), built from natural names by `constraints`."""

    fixed: dict[int, float] = field(default_factory=dict)
    bounds: dict[int, tuple[float, float]] = field(default_factory=dict)


def constraints(
    form: Form,
    fixed: dict[str, float] | None = None,
    bounds: dict[str, tuple[float | None, float | None]] | None = None,
) -> Constraints:
    """Translate natural-name constraints ({"E": 1.69}, {"alpha": (0, 1)}) to raw indices."""
    c = Constraints()
    for name, value in (fixed or {}).items():
        i, raw = form.raw_value(name, value, fixed=True)
        c.fixed[i] = raw
    merged = dict(form.default_bounds)
    merged.update(bounds or {})
    for name, (lo, hi) in merged.items():
        i = form.raw_value(name, 1.0)[0]
        rlo = -math.inf if lo is None else form.raw_value(name, lo)[1]
        rhi = math.inf if hi is None else form.raw_value(name, hi)[1]
        if not rlo < rhi:
            raise ConfigError(f"bounds[{name}]", (lo, hi), "lower < upper")
        if i not in c.fixed:
            c.bounds[i] = (rlo, rhi)
    return c


@dataclass
class RawFit:
    """Outcome of a multi-start fit in raw coordinates, with every start's end point."""

    theta: np.ndarray  # (P,) best raw parameters
    objective: float
    theta_all: np.ndarray  # (S, P)
    objective_all: np.ndarray  # (S,)
    status_all: np.ndarray  # (S,)
    iters_all: np.ndarray  # (S,)
    grad_max: float
    converged: bool
    flags: list[str]
    diagnostics: dict


# ------------------------------------------------------------------ objective and transforms


def huber(r: jnp.ndarray, delta: float) -> jnp.ndarray:
    """Huber loss (scipy.special.huber convention): r²/2 inside δ, δ(|r| - δ/2) outside."""
    ar = jnp.abs(r)
    return jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def _to_theta(z_F, base_P, sel_PF, kinds, lo_F, hi_F):
    """Search coordinates z -> raw parameters, applying bounds (a matmul places free values)."""
    vals = []
    for j, kind in enumerate(kinds):
        zj = z_F[j]
        if kind == 0:
            vals.append(zj)
        elif kind == 1:  # lower bound only
            vals.append(lo_F[j] + jax.nn.softplus(zj))
        elif kind == 2:  # upper bound only
            vals.append(hi_F[j] - jax.nn.softplus(-zj))
        else:
            vals.append(lo_F[j] + (hi_F[j] - lo_F[j]) * jax.nn.sigmoid(zj))
    return base_P + sel_PF @ jnp.stack(vals)


def _to_z(theta_SF: np.ndarray, kinds, lo_F, hi_F) -> np.ndarray:
    """Inverse of the bound transforms, clipping starts strictly inside their bounds."""
    z = np.array(theta_SF, dtype=np.float64)
    for j, kind in enumerate(kinds):
        lo, hi = lo_F[j], hi_F[j]
        if kind == 1:
            z[:, j] = _inv_softplus(np.maximum(z[:, j] - lo, 1e-6))
        elif kind == 2:
            z[:, j] = -_inv_softplus(np.maximum(hi - z[:, j], 1e-6))
        elif kind == 3:
            eps = 1e-6 * (hi - lo)
            u = (np.clip(z[:, j], lo + eps, hi - eps) - lo) / (hi - lo)
            z[:, j] = np.log(u) - np.log1p(-u)
    return z


def _inv_softplus(x: np.ndarray) -> np.ndarray:
    return np.where(x > 30, x, np.log(np.expm1(np.minimum(x, 30))))


def _objective(z_F, w_n, logX_nI, logy_n, base_P, sel_PF, lo_F, hi_F, delta, *, logpred, kinds):
    theta = _to_theta(z_F, base_P, sel_PF, kinds, lo_F, hi_F)
    r = logpred(theta, logX_nI) - logy_n
    return jnp.sum(w_n * huber(r, delta))


# ------------------------------------------------------------------ batched L-BFGS


def _two_loop(g, S_mF, Y_mF, rho_m, gamma):
    """Standard L-BFGS two-loop recursion; pairs with rho = 0 are empty and contribute nothing."""
    m = S_mF.shape[0]
    q = g
    alphas = []
    for i in range(m - 1, -1, -1):  # newest pair is last
        a = rho_m[i] * jnp.dot(S_mF[i], q)
        q = q - a * Y_mF[i]
        alphas.append(a)
    r = gamma * q
    for i in range(m):
        b = rho_m[i] * jnp.dot(Y_mF[i], r)
        r = r + S_mF[i] * (alphas[m - 1 - i] - b)
    return -r


_STATIC = ("logpred", "kinds", "history", "max_iter", "patience")


@partial(jax.jit, static_argnames=(*_STATIC, "chunk"))
def _run(state, lane, data, gtol, ftol, *, logpred, kinds, history, max_iter, patience, chunk):
    """Up to `chunk` L-BFGS iterations for every lane of the pool that is still running.

    A lane marked `fresh` spends its first iteration evaluating its start point (no step, empty
    memory). Otherwise one value-and-gradient evaluation per iteration: the trial point z + t·d is
    accepted when it satisfies Armijo's condition; else t shrinks tenfold and the lane tries again
    next iteration (after an accepted step t grows back toward 1).
    """
    vg = jax.value_and_grad(partial(_objective, logpred=logpred, kinds=kinds))

    def step(st, lane_n):
        z, f, g, fresh = st["z"], st["f"], st["g"], st["fresh"]
        has_mem = st["rho"][-1] > 0
        gnorm = jnp.linalg.norm(g)
        sy = jnp.dot(st["S"][-1], st["Y"][-1])
        yy = jnp.dot(st["Y"][-1], st["Y"][-1])
        gamma = jnp.where(has_mem, sy / jnp.maximum(yy, 1e-300), 1.0 / jnp.maximum(gnorm, 1e-12))
        d = _two_loop(g, st["S"], st["Y"], st["rho"], gamma)
        gd = jnp.dot(g, d)
        bad_dir = ~(gd < 0) | ~jnp.all(jnp.isfinite(d))
        d = jnp.where(bad_dir, -g / jnp.maximum(gnorm, 1e-12), d)
        gd = jnp.where(bad_dir, -gnorm, gd)
        t = st["t"]
        z_try = jnp.where(fresh, z, z + t * d)
        f_try, g_try = vg(z_try, *lane_n, *data)
        finite = jnp.isfinite(f_try) & jnp.all(jnp.isfinite(g_try))
        ok = (f_try <= f + 1e-4 * t * gd) & finite
        s, y = t * d, g_try - g
        sy_new = jnp.dot(s, y)
        accept = ok & (sy_new > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y))
        S = jnp.where(accept, jnp.roll(st["S"], -1, axis=0).at[-1].set(s), st["S"])
        Y = jnp.where(accept, jnp.roll(st["Y"], -1, axis=0).at[-1].set(y), st["Y"])
        rho_new = jnp.roll(st["rho"], -1).at[-1].set(1.0 / jnp.where(accept, sy_new, 1.0))
        rho = jnp.where(accept, rho_new, st["rho"])
        # A step too small to make progress clears the memory once (steepest descent from
        # there); with no memory left it ends the lane.
        t_new = jnp.where(ok, jnp.minimum(1.0, 4.0 * t), 0.1 * t)
        tiny = ~ok & (t_new < 1e-12)
        stuck = tiny & ~has_mem
        rho = jnp.where(tiny, 0.0, rho)
        t_new = jnp.where(tiny, 1.0, t_new)
        z_new = jnp.where(ok, z_try, z)
        f_new = jnp.where(ok, f_try, f)
        g_new = jnp.where(ok, g_try, g)
        rel = (f - f_new) / jnp.maximum(jnp.abs(f_new), 1e-300)
        small = jnp.where(ok, jnp.where(rel <= ftol, st["small"] + 1, 0), st["small"])
        it = st["it"] + 1
        gmax = jnp.max(jnp.abs(g_new))
        status = jnp.select(
            [gmax <= gtol, small >= patience, stuck, it >= max_iter], [0, 1, 3, 2], -1
        ).astype(jnp.int32)
        stepped = dict(
            z=z_new,
            f=f_new,
            g=g_new,
            S=S,
            Y=Y,
            rho=rho,
            t=t_new,
            it=it,
            status=status,
            small=small,
            fresh=jnp.zeros((), bool),
        )
        started = {  # a fresh lane's start point: empty memory, counters and flags zero
            **jax.tree.map(jnp.zeros_like, stepped),
            "z": z,
            "f": jnp.where(finite, f_try, jnp.inf),
            "g": jnp.where(finite, g_try, 0.0),
            "t": jnp.ones_like(t),
            "status": jnp.where(finite, -1, 3).astype(jnp.int32),
        }
        return jax.tree.map(lambda a, b: jnp.where(fresh, a, b), started, stepped)

    def body(carry):
        st, k = carry
        new = jax.vmap(step)(st, lane)
        keep = st["status"] >= 0
        merged = jax.tree.map(
            lambda old, nw: jnp.where(keep.reshape((-1,) + (1,) * (old.ndim - 1)), old, nw),
            st,
            new,
        )
        return merged, k + 1

    def cond(carry):
        st, k = carry
        return (k < chunk) & jnp.any(st["status"] < 0)

    state, _ = jax.lax.while_loop(cond, body, (state, jnp.zeros((), jnp.int32)))
    return state


def _empty_pool(size: int, n_free: int, history: int) -> dict[str, np.ndarray]:
    """Host arrays of a pool of `size` lanes, all idle (status >= 0: the solver leaves them)."""
    return dict(
        z=np.zeros((size, n_free)),
        f=np.full(size, np.inf),
        g=np.zeros((size, n_free)),
        S=np.zeros((size, history, n_free)),
        Y=np.zeros((size, history, n_free)),
        rho=np.zeros((size, history)),
        t=np.ones(size),
        it=np.zeros(size, np.int32),
        status=np.full(size, 2, np.int32),
        small=np.zeros(size, np.int32),
        fresh=np.zeros(size, bool),
    )


# ------------------------------------------------------------------ public entry points


def _bucket(n: int, size: int) -> int:
    return max(size, int(math.ceil(n / size) * size))


@dataclass
class Problem:
    """Arrays and static structure of one fit, ready for the batched solver."""

    form: Form
    logX_nI: np.ndarray  # noqa: N815
    logy_n: np.ndarray
    cons: Constraints
    delta: float

    @property
    def free(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.form.params)) if i not in self.cons.fixed)

    def kinds_and_bounds(self):
        kinds, lo, hi = [], [], []
        for i in self.free:
            b = self.cons.bounds.get(i, (-math.inf, math.inf))
            kind = (1 if math.isfinite(b[0]) else 0) + (2 if math.isfinite(b[1]) else 0)
            kinds.append(kind)
            lo.append(b[0] if math.isfinite(b[0]) else 0.0)
            hi.append(b[1] if math.isfinite(b[1]) else 0.0)
        return tuple(kinds), np.array(lo), np.array(hi)

    def selector(self) -> np.ndarray:
        """(P, F) 0/1 matrix placing the free values among all raw parameters."""
        sel = np.zeros((len(self.form.params), len(self.free)))
        for j, i in enumerate(self.free):
            sel[i, j] = 1.0
        return sel

    def base(self) -> np.ndarray:
        base = np.zeros(len(self.form.params))
        for i, v in self.cons.fixed.items():
            base[i] = v
        return base


def solve_batch(
    problem: Problem,
    starts_SP: np.ndarray,
    weights: np.ndarray,
    options: FitOptions,
    *,
    chunk: int = 16,
    lane_data: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Run L-BFGS from every start. `weights` is (n,) shared or (S, n) per start (bootstrap);
    `lane_data` = ((S, n, I) log inputs, (S, n) log targets) gives each start its own data.

    The starts queue for a pool of lanes (at most _MAX_LANES, one compiled program): the pool
    runs `chunk` iterations at a time, and a lane whose start has ended takes the next start in
    the queue, so no lane idles while starts wait. When the queue is empty the pool shrinks to
    the lanes still running, by factors of four (powers of two, down to _MIN_LANES).
    Returns raw thetas (S, P), objectives (S,), status (S,), iterations (S,).
    """
    enable_compilation_cache()  # a new process loads the solver instead of compiling it
    kinds, lo, hi = problem.kinds_and_bounds()
    S = starts_SP.shape[0]
    # Each start carries its own weights, inputs and targets: one compiled program serves a fit,
    # a bootstrap (weights differ) and many curves at once (data differ).
    start_w, start_X, start_y = _lane_arrays(problem, S, weights, lane_data)
    starts = np.asarray(starts_SP, dtype=np.float64)[:, list(problem.free)]
    z0 = _to_z(starts, kinds, lo, hi)
    static = dict(
        logpred=problem.form.log_predict,
        kinds=kinds,
        history=options.history,
        max_iter=options.max_iter,
        patience=options.patience,
    )
    z_out, f_out = np.array(z0), np.full(S, np.inf)
    status_out, it_out = np.full(S, 2, dtype=np.int64), np.zeros(S, dtype=np.int64)
    size = _pool_size(S)
    pool = _empty_pool(size, z0.shape[1], options.history)
    slot = np.full(size, -1)  # the start each lane holds; -1: idle
    lane = [np.zeros((size, *a.shape[1:])) for a in (start_w, start_X, start_y)]
    queued = 0
    with jax.enable_x64(True):
        arrays = (problem.base(), problem.selector(), lo, hi)
        data = (*(jnp.asarray(a) for a in arrays), jnp.float64(problem.delta))
        gtol, ftol = jnp.float64(options.gtol), jnp.float64(options.ftol)
        lane_dev = None
        while True:
            idle = np.nonzero(slot < 0)[0][: S - queued]
            if idle.size:
                new = np.arange(queued, queued + idle.size)
                queued += idle.size
                slot[idle] = new
                pool["z"][idle], pool["fresh"][idle], pool["status"][idle] = z0[new], True, -1
                for held, a in zip(lane, (start_w, start_X, start_y), strict=True):
                    held[idle] = a[new]
                lane_dev = None
            running = np.nonzero(slot >= 0)[0]
            if not running.size:
                break
            if queued == S and 4 * _pool_size(running.size) <= size:
                size = _pool_size(running.size)
                pool, slot, lane = _shrink(pool, slot, lane, running, size, options.history)
                lane_dev = None
            if lane_dev is None:
                lane_dev = jax.device_put(tuple(lane))
            state = _run(
                jax.device_put(pool),
                lane_dev,
                data,
                gtol,
                ftol,
                **static,
                chunk=chunk,
            )
            pool = {k: np.array(v) for k, v in state.items()}
            done = (slot >= 0) & (pool["status"] >= 0)
            ended = slot[done]
            z_out[ended], f_out[ended] = pool["z"][done], pool["f"][done]
            status_out[ended], it_out[ended] = pool["status"][done], pool["it"][done]
            slot[done] = -1
    theta = _to_theta_np(z_out, problem, kinds, lo, hi)
    return theta, f_out, status_out, it_out


def _pool_size(n: int) -> int:
    """Lanes for `n` starts: a power of two in [_MIN_LANES, _MAX_LANES] (few programs compile)."""
    size = _MIN_LANES
    while size < min(n, _MAX_LANES):
        size *= 2
    return size


def _shrink(pool, slot, lane, running, size, history):
    """The pool cut to `size` lanes: the running ones first, the rest idle."""
    small = _empty_pool(size, pool["z"].shape[1], history)
    for k in small:
        small[k][: running.size] = pool[k][running]
    slots = np.full(size, -1)
    slots[: running.size] = slot[running]
    held = []
    for a in lane:
        b = np.zeros((size, *a.shape[1:]))
        b[: running.size] = a[running]
        held.append(b)
    return small, slots, held


def _lane_arrays(problem: Problem, S: int, weights: np.ndarray, lane_data):
    """(S, n_pad) weights, (S, n_pad, I) log inputs, (S, n_pad) log targets; padding has w = 0."""
    if lane_data is None:
        X = np.broadcast_to(problem.logX_nI, (S, *problem.logX_nI.shape))
        y = np.broadcast_to(problem.logy_n, (S, problem.logy_n.shape[0]))
    else:
        X, y = lane_data
    n = y.shape[1]
    n_pad = _bucket(n, _POINT_BUCKET)
    w_out = np.zeros((S, n_pad))
    w_out[:, :n] = np.broadcast_to(weights, (S, n))
    X_out = np.zeros((S, n_pad, X.shape[2]))
    X_out[:, :n] = X
    y_out = np.zeros((S, n_pad))
    y_out[:, :n] = y
    return w_out, X_out, y_out


def _to_theta_np(z_SF: np.ndarray, problem: Problem, kinds, lo, hi) -> np.ndarray:
    vals = np.array(z_SF, dtype=np.float64)
    for j, kind in enumerate(kinds):
        if kind == 1:
            vals[:, j] = lo[j] + np.logaddexp(0.0, z_SF[:, j])
        elif kind == 2:
            vals[:, j] = hi[j] - np.logaddexp(0.0, -z_SF[:, j])
        elif kind == 3:
            vals[:, j] = lo[j] + (hi[j] - lo[j]) * expit(z_SF[:, j])
    return problem.base()[None, :] + vals @ problem.selector().T


def objective_value(problem: Problem, theta_P: np.ndarray, weights: np.ndarray | None = None):
    """Summed Huber objective and its gradient w.r.t. the free raw parameters at `theta_P`."""
    w = np.ones(problem.logy_n.shape[0]) if weights is None else weights
    free = list(problem.free)
    with jax.enable_x64(True):
        val, grad = _value_and_grad(
            np.asarray(theta_P, dtype=np.float64),
            np.asarray(theta_P, dtype=np.float64)[free],
            np.asarray(w, dtype=np.float64),
            problem.logX_nI,
            problem.logy_n,
            logpred=problem.form.log_predict,
            free=tuple(free),
            delta=problem.delta,
        )
        return float(val), np.asarray(grad)


@partial(jax.jit, static_argnames=("logpred", "free", "delta"))
def _value_and_grad(theta_P, theta_free, w_n, logX_nI, logy_n, *, logpred, free, delta):
    def f(theta_free):
        theta = theta_P.at[jnp.asarray(free, dtype=jnp.int32)].set(theta_free)
        return jnp.sum(w_n * huber(logpred(theta, logX_nI) - logy_n, delta))

    return jax.value_and_grad(f)(theta_free)


def check_convergence(
    problem: Problem, theta_SP, f_S, status_S, options: FitOptions
) -> tuple[bool, list[str], dict]:
    """Flags for the best start: its stopping reason, its gradient, agreement of the best starts."""
    f = np.where(np.isfinite(f_S), f_S, np.inf)
    best = int(np.argmin(f))
    flags: list[str] = []
    if not np.isfinite(f[best]):
        return False, ["no start reached a finite objective"], {"best_start": best}
    fbest = float(f[best])
    _, grad = objective_value(problem, theta_SP[best])
    gmax = float(np.max(np.abs(grad))) if grad.size else 0.0
    reached = f <= fbest + options.agree_rtol * abs(fbest) + 1e-300
    n_reached = int(np.sum(reached))
    free = list(problem.free)
    diff = theta_SP[reached][:, free] - theta_SP[best][free]
    spread = float(np.max(np.abs(diff))) if n_reached and free else 0.0
    if int(status_S[best]) not in (0, 1):
        flags.append(f"best start stopped by {STATUS.get(int(status_S[best]), '?')}")
    if gmax > max(options.grad_rtol * fbest, options.grad_atol):
        flags.append(
            f"gradient at the best start is {gmax:.3g} (> {options.grad_rtol:g} x objective)"
        )
    if len(f_S) >= 10 and n_reached < 2:
        flags.append("only one start reached the best objective; the minimum may be missed")
    if spread > options.agree_atol:
        flags.append(
            f"starts reaching the best objective disagree by {spread:.3g} in raw parameters "
            "(poorly identified)"
        )
    counts = {STATUS[k]: int(np.sum(status_S == k)) for k in STATUS}
    diag = {
        "best_start": best,
        "grad_max": gmax,
        "starts": len(f_S),
        "starts_at_best": n_reached,
        "best_starts_spread": spread,
        "stop_reasons": counts,
        "best_stop_reason": STATUS.get(int(status_S[best]), "?"),
    }
    return not flags, flags, diag


def fit_raw(
    form: Form,
    logX_nI: np.ndarray,
    logy_n: np.ndarray,
    *,
    starts: np.ndarray | None = None,
    fixed: dict[str, float] | None = None,
    bounds: dict[str, tuple[float | None, float | None]] | None = None,
    options: FitOptions | None = None,
    weights: np.ndarray | None = None,
) -> RawFit:
    """Fit `form` to (log inputs, log loss) from every start; raise FitError on unusable input."""
    options = options or FitOptions()
    logX_nI = np.asarray(logX_nI, dtype=np.float64).reshape(len(logy_n), -1)
    logy_n = np.asarray(logy_n, dtype=np.float64)
    cons = constraints(form, fixed, bounds)
    problem = Problem(form, logX_nI, logy_n, cons, options.delta)
    n_free = len(problem.free)
    w = np.ones(len(logy_n)) if weights is None else np.asarray(weights, dtype=np.float64)
    n_used = int(np.sum(w > 0))
    if n_used <= n_free:
        raise FitError(
            f"{form.name}: {n_used} points for {n_free} free parameters; need more points than "
            "parameters"
        )
    if starts is None:
        starts = form.start_grid(logX_nI, logy_n)
    starts = np.array(starts, dtype=np.float64)
    if starts.ndim != 2 or starts.shape[1] != len(form.params):
        raise ConfigError("starts", starts.shape, f"(S, {len(form.params)}) raw start points")
    for i, v in cons.fixed.items():
        starts[:, i] = v
    theta, f, status, iters = solve_batch(problem, starts, w, options)
    ok, flags, diag = check_convergence(problem, theta, f, status, options)
    best = diag["best_start"]
    if not ok and options.on_fail == "raise":
        raise FitError(f"{form.name} fit did not converge: " + "; ".join(flags))
    return RawFit(
        theta=theta[best],
        objective=float(f[best]),
        theta_all=theta,
        objective_all=f,
        status_all=status,
        iters_all=iters,
        grad_max=diag.get("grad_max", float("nan")),
        converged=ok,
        flags=flags,
        diagnostics=diag,
    )
