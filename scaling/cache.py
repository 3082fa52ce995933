"""Machine-local caches: the folder scaling keeps them in, and JAX's persistent compilation cache.

`cache_dir()`: $SCALING_CACHE_DIR, else $XDG_CACHE_HOME/scaling, else ~/.cache/scaling (prepared
corpora, the measured CPU peak, packing measurements, compiled programs).
`enable_compilation_cache()`: compiled XLA programs (training steps, the batched fitter) are
kept on disk, so a new process loads them instead of compiling again;
SCALING_COMPILATION_CACHE=off turns it off, or names another folder.
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_COMPILE_SECONDS = 0.5  # programs that compile faster than this are not worth storing


def cache_dir() -> Path:
    """$SCALING_CACHE_DIR, else $XDG_CACHE_HOME/scaling, else ~/.cache/scaling."""
    if os.environ.get("SCALING_CACHE_DIR"):
        return Path(os.environ["SCALING_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scaling"


def compilation_cache_dir() -> Path | None:
    """$SCALING_COMPILATION_CACHE (a folder, or off), else <cache dir>/jax-compilation."""
    env = os.environ.get("SCALING_COMPILATION_CACHE")
    if env and env.lower() in ("off", "0", "false", "no"):
        return None
    if env:
        return Path(os.path.expanduser(env))
    return cache_dir() / "jax-compilation"


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at `compilation_cache_dir()` (once per process;
    a folder the user or another library set already is left as it is)."""
    import jax

    path = compilation_cache_dir()
    if path is None or jax.config.jax_compilation_cache_dir:
        return path
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
