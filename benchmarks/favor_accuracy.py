"""FAVOR+ (the `performer` variant) against exact softmax attention: error vs random features.

Prints the relative RMS error of the attention output, ||favor - softmax|| / ||softmax||, on
random inputs (q, k ~ N(0, s²) per coordinate, v ~ N(0, 1)), mean and spread over independent
projections (layers), causal and bidirectional, for several logit scales s²·sqrt(K).

    .venv/bin/python benchmarks/favor_accuracy.py            # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from scaling.model.transformer import favor_attention, feature_projection, softmax_attention


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--projections", type=int, default=8)
    p.add_argument("--features", default="16,64,256,1024,4096")
    p.add_argument("--scales", default="0.3,0.5,0.7")
    args = p.parse_args()
    B, T, H, K = 4, args.context, 2, args.head_dim
    kq, kk, kv = jax.random.split(jax.random.key(1), 3)
    v = jax.random.normal(kv, (B, T, H, K))

    @partial(jax.jit, static_argnums=(3,))
    def errors(q, k, w_PMK, causal):
        ref = softmax_attention(q, k, v, causal=causal)

        def err(w):
            y = favor_attention(q, k, v, w, causal=causal)
            return jnp.sqrt(jnp.mean(jnp.square(y - ref)) / jnp.mean(jnp.square(ref)))

        return jax.vmap(err)(w_PMK)

    features = [int(m) for m in args.features.split(",")]
    print(f"head_dim={K} context={T} projections={args.projections}")
    print(
        f"{'q,k std':>8} {'logit sd':>8} {'attention':>13} "
        + " ".join(f"{m:>12}" for m in features)
    )
    for s in (float(x) for x in args.scales.split(",")):
        q, k = s * jax.random.normal(kq, (B, T, H, K)), s * jax.random.normal(kk, (B, T, H, K))
        logit_sd = float(jnp.std(jnp.einsum("bthk,bshk->bhts", q, k)) / np.sqrt(K))
        for causal in (True, False):
            cells = []
            for m in features:
                w = jnp.stack(
                    [jnp.asarray(feature_projection(i, m, K)) for i in range(args.projections)]
                )
                e = np.asarray(errors(q, k, w, causal))
                cells.append(f"{e.mean():.3f}±{e.std():.3f}")
            kind = "causal" if causal else "bidirectional"
            print(f"{s:>8} {logit_sd:>8.3f} {kind:>13} " + " ".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    main()
