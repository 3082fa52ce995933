"""`scaling count` and `scaling plan`: JSON contents, tables, and one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scaling import flops
from scaling.cli.main import main
from scaling.model.shape import ModelShape


def test_count_json_matches_flops(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["count", "--d-model", "128", "--n-layers", "3", "--n-heads", "4", "--vocab", "500"]
    assert main([*argv, "--variant", "llama", "--untied", "--qk-norm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    shape = ModelShape(
        d_model=128,
        n_layers=3,
        n_heads=4,
        vocab_size=500,
        variant="llama",
        tied_embeddings=False,
        qk_norm=True,
    )
    assert out == json.loads(json.dumps(flops.counts_dict(shape)))
    for key in ("d_model", "n_layers", "n_heads", "variant", "context", "vocab_size"):
        assert key in out
    assert set(out["flops_per_token"]) == {"kaplan", "attention", "chinchilla"}


def test_count_head_dim_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--d-model", "256", "--n-layers", "2", "--head-dim", "64"]) == 0
    text = capsys.readouterr().out
    n = flops.param_counts(ModelShape(d_model=256, n_layers=2, n_heads=4)).N_nonembedding
    assert f"{n:,}" in text
    assert "flops_per_token.chinchilla" in text


def test_plan_json_is_a_list_within_10_percent_and_increasing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    targets = [1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10]
    assert main(["plan", "--params", ",".join(f"{t:g}" for t in targets), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and len(rows) == len(targets)
    sizes = [r["N_nonembedding"] for r in rows]
    for row, target in zip(rows, targets, strict=True):
        assert abs(row["N_nonembedding"] / target - 1) <= 0.10
        assert set(row["flops_per_token"]) == {"kaplan", "attention", "chinchilla"}
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_plan_table_and_suffixes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--params", "300k,3M", "--variant", "llama", "--head-dim", "32"]
    assert main([*argv, "--aspect", "32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:3] == ["target", "d_model", "n_layers"]
    assert [line.split()[0] for line in lines[2:]] == ["3e+05", "3e+06"]


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (["count", "--d-model", "100", "--n-layers", "2", "--n-heads", "3"], "--n-heads", "3"),
        (["count", "--d-model", "0", "--n-layers", "2", "--n-heads", "1"], "--d-model", "0"),
        (["count", "--d-model", "64", "--n-layers", "-2", "--n-heads", "1"], "--n-layers", "-2"),
        (["count", "--d-model", "64", "--n-layers", "2", "--head-dim", "48"], "--head-dim", "48"),
        (["plan", "--params", "1000"], "--params", "1000"),
        (["plan", "--params", "1e5,lots"], "--params", "lots"),
        (["plan", "--params=-1e6"], "--params", "-1e6"),
        (["plan", "--params", "1e6", "--recipe", "huge"], "--recipe", "huge"),
    ],
)
def test_bad_input_is_one_line_naming_flag_and_value(
    argv: list[str], flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert flag in err and value in err and "allowed" in err
    assert "Traceback" not in err


def test_unknown_variant_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["count", "--d-model", "64", "--n-layers", "1", "--n-heads", "1", "--variant", "x"])
    assert exit_.value.code == 2
    assert "invalid choice: 'x'" in capsys.readouterr().err


def test_exit_code_through_a_subprocess() -> None:
    cmd = [sys.executable, "-m", "scaling.cli.main", "plan", "--params", "10"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("scaling plan: error: --params")
    assert "Traceback" not in proc.stderr
