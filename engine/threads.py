"""CPU threads for the model: a default that does not collapse when the CPU is shared.

torch runs its CPU kernels on an OpenMP team, by default one thread per core, whose idle threads
*spin* (busy-wait) at the end of every parallel region before they sleep. A process alone on the
machine gains a little from that; two processes on the same cores, or one beside a training run,
lose nearly everything: each waits, spinning, for a thread of its team that the other process has
taken the core from. Measured on 2 shared cores (docs/BENCHMARKS.md, "Threads under contention"):
an encode of 48 frames took 84 s with torch's default beside a training run, 3.2 s with one thread.

So the CLI (1) asks OpenMP to let idle threads sleep after a short spin (``GOMP_SPINCOUNT``, read when
torch loads its OpenMP runtime: set before torch is imported; sleeping at once, ``OMP_WAIT_POLICY=PASSIVE``,
halves a lone process's speed) and (2) defaults to at most
:data:`DEFAULT_MAX_THREADS` threads, never more than the CPUs this process may run on. A user's own
``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` win over both.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_MAX_THREADS", "default_threads", "sleep_idle_threads", "usable_cpus"]

# two threads: all of a small machine, and little lost on a large one (a 256x192 frame's kernels are
# too small to keep many threads busy); processes that share a big machine each take two, not all
DEFAULT_MAX_THREADS = 2


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroup cpusets, docker --cpuset-cpus),
    else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(requested: int = 0, environ: dict[str, str] | None = None) -> int | None:
    """The torch thread count for a model run: `requested` when > 0; None (leave torch's own choice)
    when ``OMP_NUM_THREADS`` is set, which torch already follows; else
    ``min(DEFAULT_MAX_THREADS, usable_cpus())``."""
    if requested < 0:
        raise ValueError(f"--threads must be >= 0 (0: the default), got {requested}")
    if requested:
        return requested
    env = os.environ if environ is None else environ
    if env.get("OMP_NUM_THREADS"):
        return None
    return min(DEFAULT_MAX_THREADS, usable_cpus())


# How long an idle OpenMP thread spins before it sleeps (libgomp's GOMP_SPINCOUNT; torch's CPU wheels use
# libgomp). Measured on 2 cores (docs/BENCHMARKS.md, "Threads under contention"): libgomp's default
# (300,000) collapses two encodes sharing the CPU (12.3 s each instead of 2.3 s); never spinning
# (OMP_WAIT_POLICY=PASSIVE) keeps them at 2.6 s but halves one torch process's speed (bench speed 256x192:
# 31.5 / 55 fps encode / decode instead of 83 / 151); 5,000 keeps both: 4.1 s shared, 77 / 141 fps alone.
SPIN_COUNT = 5000


def sleep_idle_threads() -> None:
    """Let OpenMP's idle threads spin only briefly before they sleep (unless the user chose a policy or
    a spin count). Takes effect only in a process that has not loaded torch yet: call it first thing."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
