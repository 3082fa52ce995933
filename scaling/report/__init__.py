"""Reports of a sweep's scaling study: `build_report(sweep_dir, out_dir) -> Path`."""

from scaling.report.build import build_report

__all__ = ["build_report"]
