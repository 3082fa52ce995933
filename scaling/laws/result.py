"""FitResult: a fitted law with its intervals, diagnostics and provenance, serialisable to JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaling import __version__
from scaling.io import atomic_write_json

SCHEMA = "scaling.FitResult/1"


@dataclass
class FitResult:
    """Everything needed to use, trust and reproduce one fit.

    `params` holds natural constants at full precision (E, A, B, alpha, beta, ...);
    `intervals` maps a parameter or derived quantity to {"se", "lo", "hi", "level"};
    `allocation` holds compute-optimal exponents (`a`, `b`) and coefficients where the law gives
    them; `columns` names the table columns used for loss, N, D and C (the count convention).
    """

    law: str
    method: str
    params: dict[str, float]
    objective: float | None = None
    converged: bool = True
    flags: list[str] = field(default_factory=list)
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)
    allocation: dict[str, float] = field(default_factory=dict)
    derived: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    convention: str | None = None
    n_points: int = 0
    data_hash: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    formula: str = ""
    backtest: dict[str, Any] | None = None
    version: str = __version__
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitResult:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_table(self) -> str:
        """A readable, fixed-width table of parameters, intervals and allocation."""
        lines = [f"{self.law} fit ({self.method}), {self.n_points} points"]
        if self.formula:
            lines.append(f"  {self.formula}")
        cols = ", ".join(f"{k}={v}" for k, v in self.columns.items())
        if cols:
            lines.append(
                f"  columns: {cols}"
                + (f"  (convention: {self.convention})" if self.convention else "")
            )
        lines.append(f"  {'quantity':<16}{'value':>16}{'SE':>12}{'interval':>32}")

        def row(name: str, value: float) -> str:
            iv = self.intervals.get(name, {})
            se = f"{iv['se']:.4g}" if "se" in iv else ""
            ci = f"[{iv['lo']:.6g}, {iv['hi']:.6g}]" if "lo" in iv else ""
            return f"  {name:<16}{value:>16.8g}{se:>12}{ci:>32}"

        lines += [row(k, v) for k, v in self.params.items()]
        for block in (self.allocation, self.derived):
            lines += [
                row(k, v)
                for k, v in block.items()
                if isinstance(v, int | float) and k not in self.params
            ]
        if self.objective is not None:
            lines.append(f"  objective (summed Huber): {self.objective:.6e}")
        state = "converged" if self.converged else "NOT CONVERGED"
        lines.append(
            f"  status: {state}" + ("" if not self.flags else "; " + "; ".join(self.flags))
        )
        if self.backtest:
            bt = self.backtest
            lines.append(
                f"  backtest: {bt.get('n_test')} held-out points, RMSE(log loss) = "
                f"{bt.get('rmse_log'):.4g}"
                + (
                    f", inside interval {bt['coverage']:.0%}"
                    if bt.get("coverage") is not None
                    else ""
                )
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        try:
            obj = obj.item()
        except (ValueError, AttributeError):
            obj = obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
