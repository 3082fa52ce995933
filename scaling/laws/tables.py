"""Load a table of runs (CSV, Parquet, or a sweep folder) and pick validated columns for a fit.

Default columns, when the table comes from a sweep (`eval_loss` present): loss = `eval_loss`,
N = `N_nonembedding`, D = `D`, C = `C_kaplan` (Kaplan's convention, C = 6·N_nonembedding·D, so
N and C agree). Published tables use their own names, recognised below (Epoch's `Model Size`,
`Training FLOP`, `loss`). Flags override every choice; a table with N and C but no tokens gets
D = C/(6N) (Hoffmann's and Epoch's rule), recorded in the result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.errors import DataError, FitError

MAX_TABLE_BYTES = 512 * 1024 * 1024
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

CANDIDATES: dict[str, tuple[str, ...]] = {
    "loss": ("eval_loss", "loss", "Loss", "test_cross_entropy", "L"),
    "N": ("N_nonembedding", "N", "params", "Model Size", "model_size"),
    "D": ("D", "tokens", "Seen Examples", "train_dataset_size"),
    "C": ("C_kaplan", "C", "flops", "FLOPs", "Training FLOP", "compute"),
}
ROLE_FLAGS = {"loss": "--loss", "N": "--params", "D": "--tokens", "C": "--flops"}


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, or a sweep folder (through `scaling.sweep.results`)."""
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"DATA = {str(p)!r} does not exist; give a CSV, Parquet file or sweep folder"
        )
    if p.is_dir():
        try:
            from scaling.sweep.results import load_results
        except ImportError as e:
            raise DataError(
                f"DATA = {str(p)!r} is a folder, but reading sweep folders needs "
                f"scaling.sweep.results.load_results, which is not available ({e})"
            ) from e
        df = load_results(p, view="final")  # one row per finished run: its last evaluation
        return _nonempty(df, p)
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"DATA = {str(p)!r}: suffix {suffix!r} not allowed; use .csv, .parquet or .pq"
        )
    size = p.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise DataError(f"DATA = {str(p)!r} is {size} bytes; the limit is {MAX_TABLE_BYTES}")
    try:
        df = pd.read_csv(p, encoding="utf-8") if suffix == ".csv" else pd.read_parquet(p)
    except UnicodeDecodeError as e:
        raise DataError(f"DATA = {str(p)!r} is not UTF-8 text: {e}") from e
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(f"DATA = {str(p)!r} cannot be read as {suffix[1:]}: {e}") from e
    return _nonempty(df, p)


def _nonempty(df: pd.DataFrame, p: Path) -> pd.DataFrame:
    if len(df) == 0:
        raise DataError(f"DATA = {str(p)!r} has no rows")
    return df


@dataclass
class LawData:
    """Validated float64 arrays for a fit, with the column names they came from."""

    loss: np.ndarray
    N: np.ndarray | None = None
    D: np.ndarray | None = None
    C: np.ndarray | None = None
    columns: dict[str, str] = field(default_factory=dict)
    frame: pd.DataFrame | None = None  # the rows used, for plots and backtests

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def get(self, role: str) -> np.ndarray:
        arr = {"loss": self.loss, "N": self.N, "D": self.D, "C": self.C}[role]
        if arr is None:
            raise FitError(f"this law needs {role} ({ROLE_FLAGS[role]}), which the table lacks")
        return arr

    @property
    def convention(self) -> str | None:
        col = self.columns.get("C", "")
        return col[2:] if col.startswith("C_") else None

    def subset(self, mask: np.ndarray) -> LawData:
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        frame = None if self.frame is None else self.frame[mask].reset_index(drop=True)
        return LawData(
            pick(self.loss), pick(self.N), pick(self.D), pick(self.C), dict(self.columns), frame
        )

    def hash(self) -> str:
        """sha256 of the used columns' float64 bytes (first 16 hex digits)."""
        h = hashlib.sha256()
        for role in ("loss", "N", "D", "C"):
            arr = getattr(self, role)
            if arr is not None:
                h.update(role.encode())
                h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


def _pick(df: pd.DataFrame, role: str, given: str | None, required: bool) -> str | None:
    if given is not None:
        if given not in df.columns:
            raise DataError(
                f"column {given!r} ({ROLE_FLAGS[role]}) not in the table; available: "
                + ", ".join(map(str, df.columns))
            )
        return given
    for name in CANDIDATES[role]:
        if name in df.columns:
            return name
    if required:
        raise DataError(
            f"no {role} column found (tried {', '.join(CANDIDATES[role])}); "
            f"pass {ROLE_FLAGS[role]} COL; available: " + ", ".join(map(str, df.columns))
        )
    return None


def _values(df: pd.DataFrame, col: str, role: str) -> np.ndarray:
    try:
        arr = pd.to_numeric(df[col], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise DataError(f"column {col!r} ({role}) is not numeric: {e}") from e
    bad = ~np.isfinite(arr)
    if bad.any():
        kind = "NaN" if np.isnan(arr[bad]).any() else "inf"
        raise DataError(
            f"column {col!r} ({role}) has {int(bad.sum())} non-finite value(s) ({kind}), first at "
            f"row {int(np.argmax(bad))}; allowed: finite positive numbers"
        )
    if (arr <= 0).any():
        i = int(np.argmax(arr <= 0))
        raise DataError(
            f"column {col!r} ({role}) has non-positive value {arr[i]!r} at row {i}; "
            "allowed: positive numbers (the fit is in log space)"
        )
    return arr


def select(
    df: pd.DataFrame,
    needs: tuple[str, ...],
    *,
    loss: str | None = None,
    params: str | None = None,
    tokens: str | None = None,
    flops: str | None = None,
    wants: tuple[str, ...] = (),
) -> LawData:
    """Choose and validate columns for the roles a law needs (`needs`) or can use (`wants`).

    If D is needed but absent, it is derived as C/(6N) when both exist (recorded as 'C/(6N)').
    """
    given = {"loss": loss, "N": params, "D": tokens, "C": flops}
    cols: dict[str, str] = {"loss": _pick(df, "loss", loss, True)}
    derive_d = False
    for role in ("N", "D", "C"):
        need = role in needs
        if role == "D" and need and given["D"] is None:
            name = _pick(df, "D", None, False)
            if name is None:
                derive_d = True
                continue
            cols["D"] = name
            continue
        if need or role in wants or given[role] is not None:
            name = _pick(df, role, given[role], need)
            if name is not None:
                cols[role] = name
    if derive_d:
        for role in ("N", "C"):
            if role not in cols:
                name = _pick(df, role, given[role], False)
                if name is None:
                    raise DataError(
                        f"no D column found (tried {', '.join(CANDIDATES['D'])}) and D = C/(6N) "
                        f"needs N and C; pass --tokens COL; available: "
                        + ", ".join(map(str, df.columns))
                    )
                cols[role] = name
    arrays = {role: _values(df, col, role) for role, col in cols.items()}
    if derive_d:
        arrays["D"] = arrays["C"] / (6.0 * arrays["N"])
        cols["D"] = "C/(6N)"
    return LawData(
        loss=arrays["loss"],
        N=arrays.get("N"),
        D=arrays.get("D"),
        C=arrays.get("C"),
        columns=cols,
        frame=df.reset_index(drop=True),
    )
