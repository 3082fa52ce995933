"""`load_results`: one row per evaluation with N, D and C from scaling.flops, config columns,
run_id and state; diverged runs out by default and in with the flag; CSV/Parquet output."""

from __future__ import annotations

import socket

import pandas as pd
import pytest
from sweep_fake_train import fake_train
from tiny import fake_grid

from scaling import flops
from scaling.cli.main import main
from scaling.errors import ConfigError, DataError
from scaling.io import atomic_write_json, read_json
from scaling.sweep.designs import plan
from scaling.sweep.results import load_results
from scaling.sweep.runner import prepare_sweep_dir
from scaling.sweep.spec import load_spec
from scaling.sweep.status import format_status, sweep_status

SWEEP = fake_grid(1280, "1e-3, 2.0")


@pytest.fixture
def sweep_dir(tmp_path, monkeypatch):
    """A finished sweep: 2 shapes x lr {1e-3 (done), 2.0 (diverges)}, plus one pending run."""
    monkeypatch.setenv("FAKE_STEP_S", "0")
    p = tmp_path / "s.toml"
    p.write_text(SWEEP)
    spec = load_spec(p)
    runs = plan(spec)
    out = tmp_path / "out"
    store = prepare_sweep_dir(spec, runs, out)
    for r in runs[:3]:  # the 4th stays pending
        fake_train(r.config, store.run_dir(r.run_id))
    return out, runs


def test_rows_carry_counts_from_flops_config_columns_and_state(sweep_dir):
    out, runs = sweep_dir
    df = load_results(out)
    done = [r for r in runs[:3] if r.config.optim.lr < 1]
    assert set(df["run_id"]) == {r.run_id for r in done}
    assert (df["state"] == "done").all()
    assert len(df) == 4 * len(done)  # the fake evaluates 4 times
    for r in done:
        rows = df[df["run_id"] == r.run_id]
        counts = flops.param_counts(r.shape)
        assert (rows["N_nonembedding"] == counts.N_nonembedding).all()
        assert (rows["N_chinchilla"] == counts.N_chinchilla).all()
        for conv in flops.CONVENTIONS:
            want = [flops.training_flops(r.shape, d, conv) for d in rows["D"]]
            assert rows[f"C_{conv}"].tolist() == want
        assert (rows["model.d_model"] == r.shape.d_model).all()
        assert (rows["optim.lr"] == r.config.optim.lr).all()
        assert (rows["train.objective"] == "causal").all()  # a default, still a column
        assert rows["D"].max() == r.tokens
        assert rows["annealed"].tolist() == [False, False, False, True]
    assert list(df.columns[:4]) == ["run_id", "state", "step", "D"]


def test_diverged_runs_are_excluded_by_default_and_included_with_the_flag(sweep_dir):
    out, runs = sweep_dir
    diverged = {r.run_id for r in runs[:3] if r.config.optim.lr >= 1}
    assert diverged
    assert not diverged & set(load_results(out)["run_id"])
    with_div = load_results(out, include_diverged=True)
    assert diverged <= set(with_div["run_id"])
    assert set(with_div[with_div["run_id"].isin(diverged)]["state"]) == {"diverged"}


def test_final_view_has_one_row_per_run_at_its_last_step(sweep_dir):
    out, _ = sweep_dir
    final = load_results(out, view="final", include_diverged=True)
    assert final["run_id"].is_unique and len(final) == 3
    last = load_results(out, include_diverged=True).groupby("run_id")["step"].max()
    assert final.set_index("run_id")["step"].to_dict() == last.to_dict()
    assert load_results(out, view="final", include_incomplete=True)["run_id"].is_unique
    with pytest.raises(ConfigError):
        load_results(out, view="last")


def test_cli_results_csv_and_parquet_round_trip(sweep_dir, tmp_path, capsys):
    out, _ = sweep_dir
    expected = load_results(out, include_diverged=True)
    for name in ("r.csv", "r.parquet"):
        path = tmp_path / name
        assert main(["sweep", "results", str(out), "--out", str(path), "--include-diverged"]) == 0
        back = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
        assert back["run_id"].tolist() == expected["run_id"].tolist()
        assert back["C_attention"].tolist() == pytest.approx(expected["C_attention"].tolist())
    assert main(["sweep", "results", str(out), "--out", str(tmp_path / "r.xlsx")]) == 2
    assert "--out" in capsys.readouterr().err


def test_status_counts_states_and_shows_progress(sweep_dir, capsys):
    out, runs = sweep_dir
    rows = {r.run_id: r for r in sweep_status(out)}
    assert rows[runs[0].run_id].state == "done" and rows[runs[0].run_id].progress == 1.0
    assert rows[runs[3].run_id].state == "pending" and rows[runs[3].run_id].progress == 0.0
    text = format_status(list(rows.values()))
    assert text.startswith("4 runs") and "done: 2" in text and "diverged: 1" in text
    assert main(["sweep", "status", str(out)]) == 0
    assert "pending: 1" in capsys.readouterr().out


def test_not_a_sweep_folder(tmp_path):
    with pytest.raises(DataError, match="not a sweep folder"):
        load_results(tmp_path)


def test_only_runs_of_the_current_plan_are_results(sweep_dir):
    out, runs = sweep_dir
    plan_file = out / "plan.json"
    current = read_json(plan_file)
    current["runs"] = [r for r in current["runs"] if r["run_id"] != runs[0].run_id]
    atomic_write_json(plan_file, current)  # as if the sweep file changed: runs[0] left over
    assert runs[0].run_id not in set(load_results(out, include_incomplete=True)["run_id"])
    assert runs[0].run_id not in {r.run_id for r in sweep_status(out)}


def test_status_shows_a_running_run_without_a_live_owner_as_stale(sweep_dir):
    import subprocess
    import sys

    out, runs = sweep_dir
    run_dir = out / "runs" / runs[3].run_id
    atomic_write_json(run_dir / "status.json", {"state": "running", "step": 10})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease = {"token": "t", "host": socket.gethostname(), "processes": [{"pid": dead.pid}]}
    atomic_write_json(run_dir / "lease.json", lease)
    row = {r.run_id: r for r in sweep_status(out)}[runs[3].run_id]
    assert row.state == "stale" and row.progress == pytest.approx(10 / runs[3].config.total_steps)
