"""train_packed(): K packed runs record what the same K runs record alone, stepped one member
a call (the CPU default here, one device) or all in one vmapped call (the accelerators'
default); a diverging member is masked out without disturbing the others; runs that cannot
share a pack are refused.

Tolerance: losses agree to 1e-5 nats absolute (float32: a vmapped step may sum in another
order than the single step, and 40 AdamW steps carry that rounding along; measured here the
largest difference was 2.4e-7).
"""

from __future__ import annotations

import pytest
from tiny import tiny_config

from scaling.errors import ConfigError
from scaling.io import read_json, read_jsonl
from scaling.train import RunConfig, train
from scaling.train.packed import check_packable, member_groups, train_packed

TOL = 1e-5
COMPARED = ("step", "tokens", "train_loss", "eval_loss", "eval_loss_se", "lr", "flops_attention")


pytestmark = pytest.mark.usefixtures("cache_dir")  # tests/conftest.py


PACKED = {"train": {"steps": 40}, "eval": {"n_evals": 5}, "checkpoint": {"every_steps": 0}}


def tiny(**sections) -> RunConfig:
    return tiny_config(PACKED, **sections)


# Three members differing in init seed, data seed, learning rate, schedule and length.
MEMBERS = [
    tiny(),
    tiny(train={"init_seed": 1, "steps": 24}, data={"data_seed": 3}, optim={"lr": 3e-3}),
    tiny(train={"init_seed": 2, "steps": 32}, optim={"schedule": "constant", "lr": 5e-3}),
]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The three members trained one by one with train()."""
    root = tmp_path_factory.mktemp("alone")
    return [train(c, root / f"r{k}").rows for k, c in enumerate(MEMBERS)]


def assert_same_rows(rows, reference):
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    for a, b in zip(rows, reference, strict=True):
        for key in COMPARED:
            assert a[key] == pytest.approx(b[key], abs=TOL), (a["step"], key)


@pytest.mark.parametrize("group_size", [None, 3])
def test_packed_runs_record_what_they_record_alone(tmp_path, alone, group_size):
    dirs = [tmp_path / f"p{k}" for k in range(3)]
    outs = train_packed(MEMBERS, dirs, group_size=group_size)
    assert [o.state for o in outs] == ["done"] * 3
    assert [o.step for o in outs] == [40, 24, 32]  # shorter runs left the pack at their end
    for k in range(3):
        rows = read_jsonl(dirs[k] / "metrics.jsonl")
        assert_same_rows(rows, alone[k])
        status = read_json(dirs[k] / "status.json")
        assert status["state"] == "done" and status["step"] == MEMBERS[k].total_steps
        assert status["pack_size"] == 3
        assert read_json(dirs[k] / "config.json") == MEMBERS[k].to_dict()
    # finished runs are results: packing them again trains nothing
    again = train_packed(MEMBERS, dirs, group_size=group_size)
    assert [o.step for o in again] == [40, 24, 32]


@pytest.mark.parametrize("group_size", [None, 3])
def test_a_diverging_member_is_masked_and_the_others_go_on(tmp_path, alone, group_size):
    bad = tiny(optim={"lr": 1e4, "warmup_steps": 0}, train={"init_seed": 7})
    configs = [MEMBERS[0], bad, MEMBERS[2]]
    dirs = [tmp_path / f"p{k}" for k in range(3)]
    outs = train_packed(configs, dirs, group_size=group_size)
    assert [o.state for o in outs] == ["done", "diverged", "done"]
    assert outs[1].step < 40 and outs[1].reason
    status = read_json(dirs[1] / "status.json")
    assert status["state"] == "diverged" and status["reason"] and "traceback" not in status
    assert read_jsonl(dirs[1] / "metrics.jsonl")[0]["step"] == 1  # its metrics are kept
    assert_same_rows(read_jsonl(dirs[0] / "metrics.jsonl"), alone[0])
    assert_same_rows(read_jsonl(dirs[2] / "metrics.jsonl"), alone[2])


def test_a_crashed_pack_resumes_alone_from_its_own_checkpoint(tmp_path, alone, monkeypatch):
    from scaling.train import packed

    real_check = packed.check_loss

    def crash_at_27(guards, state, step, loss):
        if step == 27:
            raise RuntimeError("simulated crash")
        return real_check(guards, state, step, loss)

    monkeypatch.setattr(packed, "check_loss", crash_at_27)
    configs = [c.with_overrides(["checkpoint.every_steps=20"]) for c in MEMBERS[:2]]
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_packed(configs, dirs)
    status = read_json(dirs[0] / "status.json")
    assert status["state"] == "failed" and "simulated crash" in status["traceback"]
    assert read_json(dirs[1] / "status.json")["state"] == "done"  # it had ended at step 24
    monkeypatch.setattr(packed, "check_loss", real_check)
    out = train(configs[0], dirs[0])  # the single loop restores the packed run's checkpoint
    assert out.state == "done" and out.step == MEMBERS[0].total_steps
    assert_same_rows(read_jsonl(dirs[0] / "metrics.jsonl"), alone[0])


def test_configs_that_cannot_share_a_pack_are_refused():
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        check_packable([MEMBERS[0], tiny(train={"batch_size": 8})])
    with pytest.raises(ConfigError, match="model"):
        check_packable([MEMBERS[0], tiny(model={"d_model": 64})])
    with pytest.raises(ConfigError, match=r"optim\.weight_decay"):
        check_packable([MEMBERS[0], tiny(optim={"weight_decay": 0.0})])
    with pytest.raises(ConfigError, match=r"train\.objective"):
        check_packable([MEMBERS[0], tiny(train={"objective": "span"})])
    check_packable(MEMBERS)  # seeds, learning rates, schedules and lengths may differ


class _Device:
    def __init__(self, platform: str):
        self.platform = platform


def test_members_are_grouped_one_a_device_on_cpus_and_all_together_elsewhere():
    cpus = [_Device("cpu")] * 2
    assert member_groups(5, cpus) == [range(0, 2), range(2, 4), range(4, 5)]
    assert member_groups(4, [_Device("cpu")]) == [range(k, k + 1) for k in range(4)]
    assert member_groups(16, [_Device("gpu")]) == [range(0, 16)]
    assert member_groups(5, cpus, group_size=4) == [range(0, 4), range(4, 5)]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="group_size"):
            member_groups(4, cpus, group_size=bad)
    with pytest.raises(ConfigError, match="group_size"):
        train_packed(MEMBERS, ["a", "b", "c"], group_size=0)
