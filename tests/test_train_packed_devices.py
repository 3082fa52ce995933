"""Packed runs over 2 CPU host devices (in a subprocess) record what each run records alone.

On CPUs a pack steps its members in groups of one member a device (`member_groups`): K = 2 is
one group, K = 4 two, K = 3 a group of two and one of one. `pack_shardings` lays each group
out: members split over the devices (a group of 2: one member per device, stepped unbatched;
K = 4 in one group, as `group_size=4` asks: two per device, vmapped), or members not dividing
over 2 (a group of 1, or of 3) on both devices with each batch split, a program with an
all-reduce. Each is checked against `train()` of each member alone on the same two devices,
within 1e-5 nats (float32 sums in another order), as in `test_train_packed.py`; the fourth
member is shorter and leaves its pack early, and a member that diverges beside the first
(K = 2) leaves it undisturbed.

The split layout's step is launched only on ready inputs (`launched_when_ready`); this 30-step
pack passes without that too, so the deadlock it prevents is tested on the run step
(`test_split_step.py`), where 300 steps run ahead.
"""

from __future__ import annotations

from pathlib import Path

from host_devices import run_on_host_devices

SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import jax
from tiny import tiny_config
from scaling.train import train
from scaling.train.packed import member_groups, pack_shardings, train_packed

root = Path(sys.argv[2])
packed = {"train": {"steps": 30}, "eval": {"n_evals": 3}, "checkpoint": {"every_steps": 0}}
members = [
    tiny_config(packed),
    tiny_config(packed, train={"init_seed": 1}, data={"data_seed": 3}, optim={"lr": 3e-3}),
    tiny_config(packed, train={"init_seed": 2}, optim={"schedule": "constant"}),
    tiny_config(packed, train={"init_seed": 3, "steps": 20}, data={"data_seed": 5}),
]
keys = ("step", "train_loss", "eval_loss")
out = {"devices": jax.device_count(), "alone": [], "layouts": {}}
for k, cfg in enumerate(members):
    out["alone"].append([[r[key] for key in keys] for r in train(cfg, root / f"a{k}").rows])
for K, group_size in ((2, None), (3, None), (4, None), (3, 3), (4, 4)):
    name = f"K{K}" + (f"/g{group_size}" if group_size else "")
    groups = member_groups(K, jax.local_devices(), group_size)
    out["layouts"][name] = [
        [len(g), str(pack_shardings(len(g), members[0].train.batch_size)[0].spec)]
        for g in groups
    ]
    dirs = [root / f"{name}-{k}" for k in range(K)]
    outs = train_packed(members[:K], dirs, group_size=group_size)
    out[name] = [[[r[key] for key in keys] for r in o.rows] for o in outs]
    out[name + "/state"] = [o.state for o in outs]
# K = 2 with a diverging member: the other, alone on its device, goes on as if alone.
bad = tiny_config(packed, optim={"lr": 1e4, "warmup_steps": 0}, train={"init_seed": 7})
outs = train_packed([members[0], bad], [root / "d0", root / "d1"])
out["diverging"] = [[[r[key] for key in keys] for r in o.rows] for o in outs]
out["diverging/state"] = [o.state for o in outs]
print("RESULT " + json.dumps(out))
"""


def test_packed_runs_over_two_devices_record_what_they_record_alone(tmp_path):
    tests_dir = str(Path(__file__).parent)
    out = run_on_host_devices(
        SCRIPT, 2, tmp_path / "cache", tests_dir, str(tmp_path), collective_timeout_s=10
    )
    assert out["devices"] == 2
    # Groups of 2: members split over the devices; of 1 or 3: every member on both, batches split.
    split, both = "P('d',)", "P()"
    assert out["layouts"] == {
        "K2": [[2, split]],
        "K3": [[2, split], [1, both]],
        "K4": [[2, split], [2, split]],
        "K3/g3": [[3, both]],
        "K4/g4": [[4, split]],
    }
    for name in out["layouts"]:
        K = int(name[1])
        assert out[name + "/state"] == ["done"] * K
        for k, (rows, alone) in enumerate(zip(out[name], out["alone"], strict=False)):
            assert [r[0] for r in rows] == [r[0] for r in alone], (name, k)
            for r, a in zip(rows, alone, strict=True):
                for x, y in zip(r[1:], a[1:], strict=True):
                    assert (x is None and y is None) or abs(x - y) <= 1e-5, (name, k, r, a)
    assert out["diverging/state"] == ["done", "diverged"]
    rows, alone = out["diverging"][0], out["alone"][0]
    assert [r[0] for r in rows] == [r[0] for r in alone]
    for r, a in zip(rows, alone, strict=True):
        for x, y in zip(r[1:], a[1:], strict=True):
            assert (x is None and y is None) or abs(x - y) <= 1e-5, ("diverging", r, a)
