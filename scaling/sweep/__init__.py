"""Sweeps: TOML sweep files, designs (grid, IsoFLOP, ladder, WSD branches) crossed with axes,
the run store, the runner with its executors (local processes, SLURM via submitit, Ray),
status and results.

    spec = load_spec("sweeps/tiny.toml")      # validated; errors name the key
    runs = plan(spec)                         # [PlannedRun(run_id, config, point), ...]
    run_sweep(spec, "runs/tiny", workers=2)   # runs only what is missing; resumes; never reruns
    run_sweep(spec, "/shared/tiny", executor=ExecutorOptions(kind="slurm", partition="gpu"))
    df = load_results("runs/tiny")            # one row per evaluation, N/D/C in every convention
"""

from typing import Any

__all__ = ["ExecutorOptions", "load_results", "load_spec", "plan", "run_sweep", "sweep_status"]

_HOMES = {
    "load_spec": "scaling.sweep.spec",
    "plan": "scaling.sweep.designs",
    "run_sweep": "scaling.sweep.runner",
    "load_results": "scaling.sweep.results",
    "sweep_status": "scaling.sweep.status",
    "ExecutorOptions": "scaling.sweep.executor_options",
}


def __getattr__(name: str) -> Any:  # lazy: importing the package stays light (no pandas, jax)
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'scaling.sweep' has no attribute {name!r}")
