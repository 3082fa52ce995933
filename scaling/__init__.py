"""scaling: an empirical scaling-law research toolkit.

Model family and exact counts (`scaling.model`, `scaling.flops`), data (`scaling.data`),
training (`scaling.train`), sweeps (`scaling.sweep`) and the analysis layer (`scaling.laws`).
"""

__version__ = "0.1.0"
