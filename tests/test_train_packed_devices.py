"""Packed runs over 2 CPU host devices (in a subprocess) record what each run records alone.

`pack_shardings` lays a pack out two ways: members split over the devices (K = 2: one member
per device, stepped unbatched; K = 4: two per device, vmapped), or K = 3 members (not dividing
over 2) on both devices with each batch split, a program with an all-reduce. Each is checked
against `train()` of each member alone on the same two devices, within 1e-5 nats (float32 sums
in another order), as in `test_train_packed.py`; the fourth member is shorter and leaves its
pack early, and a member that diverges beside the first (K = 2) leaves it undisturbed.

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
from scaling.train.packed import pack_shardings, train_packed

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
for K in (2, 3, 4):
    state_sh = pack_shardings(K, members[0].train.batch_size)[0]
    out["layouts"][K] = str(state_sh.spec)
    outs = train_packed(members[:K], [root / f"p{K}-{k}" for k in range(K)])
    out[f"K{K}"] = [[[r[key] for key in keys] for r in o.rows] for o in outs]
    out[f"K{K}/state"] = [o.state for o in outs]
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
    # K = 2 and 4: members split over the devices; K = 3: every member on both, batches split.
    assert out["layouts"] == {"2": "P('d',)", "3": "P()", "4": "P('d',)"}
    for K in (2, 3, 4):
        assert out[f"K{K}/state"] == ["done"] * K
        for k, (rows, alone) in enumerate(zip(out[f"K{K}"], out["alone"], strict=False)):
            assert [r[0] for r in rows] == [r[0] for r in alone], (K, k)
            for r, a in zip(rows, alone, strict=True):
                for x, y in zip(r[1:], a[1:], strict=True):
                    assert (x is None and y is None) or abs(x - y) <= 1e-5, (K, k, r, a)
    assert out["diverging/state"] == ["done", "diverged"]
    rows, alone = out["diverging"][0], out["alone"][0]
    assert [r[0] for r in rows] == [r[0] for r in alone]
    for r, a in zip(rows, alone, strict=True):
        for x, y in zip(r[1:], a[1:], strict=True):
            assert (x is None and y is None) or abs(x - y) <= 1e-5, ("diverging", r, a)
