"""Paths of the published data sets the laws tests use (copied into analysis/data)."""

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "analysis" / "data"
EPOCH_CSV = DATA / "chinchilla-epoch" / "svg_extracted_data.csv"
BNSL_CSV = DATA / "bnsl-4digit-addition" / "four_digit_addition.csv"
ALABDULMOHSIN_LANG_CSV = DATA / "alabdulmohsin-2022" / "benchmark.lang.csv"
