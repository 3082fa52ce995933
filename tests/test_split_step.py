"""The two-program data-parallel step (`make_split_train_step`) against the one-program step, on
2 CPU host devices (in a subprocess): same loss, gradient norm and parameters after 3 steps, for
a plain batch and for a masked objective batch whose shards hold unequal loss weights (one shard
none), with z-loss. `splits_step` (the choice `make_run_step` makes) holds only for a batch
split over devices with replicated params.

Only the order of float32 sums differs: losses and gradient norms agree within 1e-5 (measured
< 1e-6); parameters within 1e-4 (measured 1.1e-5: Adam divides near-zero gradients by their own
size, which magnifies rounding). The gradient norm catches a wrong shard weighting, which
Adam's normalised update alone could hide.

Steps dispatched ahead without waiting (as the training loop does between syncs) must not
deadlock in a collective's rendezvous, for the split step and for the one-program FSDP step:
before `make_run_step` launched their collective programs on ready inputs, 300 steps of a
1-layer model hung in 5 of 5 runs (split) and 2 of 2 (FSDP). XLA's collective timeout is
lowered so that a hang fails in seconds.
"""

from __future__ import annotations

import pytest
from host_devices import run_on_host_devices

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from scaling.model.shape import ModelShape
from scaling.train.config import RunConfig
from scaling.train.mesh import make_mesh
from scaling.train.optim import make_optimizer
from scaling.train.step import (init_params, make_split_train_step,
    make_train_step, splits_step)

shape = ModelShape(d_model=32, n_layers=1, n_heads=2, vocab_size=64, context=16)
config = RunConfig(model=shape).with_overrides(["train.batch_size=8", "optim.lr=0.01"])
tx = make_optimizer(config)
rng = np.random.default_rng(0)
plain = [rng.integers(0, 64, (8, 17)).astype(np.int32) for _ in range(3)]
weights = np.zeros((8, 16), np.float32)
weights[0, :5] = 1.0; weights[1, 3] = 1.0; weights[2, ::2] = 1.0  # shard 2 (rows 4-7): none
masked = [{"inputs": b[:, :-1], "targets": b[:, 1:], "weights": weights} for b in plain]
out = {"devices": jax.device_count(), "splits": [
    splits_step(make_mesh(config.mesh, 8)),
    splits_step(make_mesh(config.with_overrides(["mesh.data=1", "mesh.fsdp=2"]).mesh, 8)),
    splits_step(make_mesh(config.mesh, 7)),  # 7 does not divide: one device
]}
for name, batches, causal, z_loss in (("plain", plain, True, 0.0), ("masked", masked, False, 1e-3)):
    run_mesh = make_mesh(config.mesh, 8)
    graphdef, params = init_params(shape, 0)
    params = jax.device_get(params)
    rep = run_mesh.replicated()
    steps = {
        "one": make_train_step(graphdef, tx, z_loss=z_loss, causal=causal,
                               in_shardings=(rep, rep, run_mesh.batch(), None),
                               out_shardings=(rep, rep, rep)),
        "split": make_split_train_step(graphdef, tx, run_mesh.mesh, z_loss=z_loss, causal=causal),
    }
    for key, step in steps.items():
        p, o = jax.device_put((params, tx.init(params)), rep)
        metrics = []
        for b in batches:
            p, o, m = step(p, o, jax.device_put(b, run_mesh.batch()), np.float32(1e-2))
            metrics.append([float(m["loss"]), float(m["grad_norm"])])
        flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(p))])
        out[f"{name}/{key}"] = {"metrics": metrics, "params": flat[::7].tolist()}
print("RESULT " + json.dumps(out))
"""


ASYNC_SCRIPT = r"""
import json, sys
import jax, numpy as np
from scaling.model.shape import ModelShape
from scaling.train.config import RunConfig
from scaling.train.mesh import make_mesh
from scaling.train.optim import make_optimizer
from scaling.train.step import init_params, make_run_step, splits_step

shape = ModelShape(d_model=32, n_layers=1, n_heads=2, vocab_size=64, context=32)
mesh = {"split": ["mesh.data=2"], "fsdp": ["mesh.data=1", "mesh.fsdp=2"]}[sys.argv[1]]
config = RunConfig(model=shape).with_overrides(["train.batch_size=16", *mesh])
tx = make_optimizer(config)
run_mesh = make_mesh(config.mesh, 16)
graphdef, params = init_params(shape, 0)
arrays = {"params": params, "opt_state": tx.init(params)}
state_sharding = run_mesh.state(arrays)
arrays = run_mesh.put(arrays, state_sharding)
step = make_run_step(graphdef, tx, run_mesh, state_sharding)
p, o = arrays["params"], arrays["opt_state"]
rng = np.random.default_rng(0)
losses = []
for _ in range(300):  # no wait between steps
    batch = rng.integers(0, 64, (16, 33)).astype(np.int32)
    p, o, m = step(p, o, run_mesh.put(batch, run_mesh.batch()), np.float32(1e-3))
    losses.append(m["loss"])
out = {"splits": splits_step(run_mesh), "losses": [float(x) for x in jax.device_get(losses)]}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("mesh", ["split", "fsdp"])
def test_steps_dispatched_ahead_do_not_deadlock(tmp_path, mesh):
    out = run_on_host_devices(ASYNC_SCRIPT, 2, tmp_path, mesh, collective_timeout_s=10)
    assert out["splits"] == (mesh == "split")  # the two-program step, or one program
    assert len(out["losses"]) == 300 and all(0.0 < x < 10.0 for x in out["losses"])


def test_split_step_matches_one_program_step(tmp_path):
    out = run_on_host_devices(SCRIPT, 2, tmp_path)
    assert out["devices"] == 2
    assert out["splits"] == [True, False, False]
    for name in ("plain", "masked"):
        one, split = out[f"{name}/one"], out[f"{name}/split"]
        assert len(one["metrics"]) == 3 and one["metrics"][0][0] > 1.0
        pairs = zip(one["metrics"], split["metrics"], strict=True)
        for (loss_a, norm_a), (loss_b, norm_b) in pairs:
            assert abs(loss_a - loss_b) <= 1e-5, (name, loss_a, loss_b)
            assert abs(norm_a - norm_b) <= 1e-5 * max(1.0, norm_a), (name, norm_a, norm_b)
        diffs = [abs(a - b) for a, b in zip(one["params"], split["params"], strict=True)]
        assert max(diffs) <= 1e-4, (name, max(diffs))
