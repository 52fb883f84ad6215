"""What machine a benchmark ran on, and how much memory it used: one place for every script in bench/.

Every script imports it (``from bench.machine import machine_info``), so every report names the
hardware and software the same way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
BYTES_PER_GB = 1e9


def peak_rss_mib() -> float:
    """This process's own peak resident set size so far, in MiB.

    Linux's VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a worker started
    by this benchmark would report at least the parent's size at the fork. ru_maxrss (bytes on macOS,
    KiB elsewhere) is the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # "VmHWM:  12345 kB"
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def openblas_runtime() -> Optional[str]:
    """The core OpenBLAS runs on and its thread count, from threadpoolctl (None without it, or without OpenBLAS)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for library in threadpool_info():
        if library.get("internal_api") == "openblas":
            return f"OpenBLAS core {library.get('architecture')}, {library.get('num_threads')} threads"
    return None


def installed_version(package: str) -> Optional[str]:
    """The installed version of ``package``, without importing it (None if it is not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """The date, CPU model and cores, memory, OS, Python, numpy and its BLAS (with the core OpenBLAS runs),
    numba, and charrnn's version and revision."""
    cpu_model = platform.processor() or platform.machine()
    memory_gb = None
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu_model)
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
            memory_gb = kib * 1024 / BYTES_PER_GB
    blas = "unknown"
    try:
        blas_info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas_info.get('name', '?')} {blas_info.get('version', '')}".strip()
    except (TypeError, KeyError, ValueError):
        pass  # numpy before 1.25 prints its configuration instead of returning it
    runtime = openblas_runtime()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": memory_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas + (f" ({runtime})" if runtime else ""),
        "numba": installed_version("numba"),
        "charrnn": installed_version("charrnn") or "not installed as a distribution",
        "charrnn_revision": git_revision(),
    }


def git_revision() -> Optional[str]:
    """The repository's short commit, and whether tracked files have uncommitted changes."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + (" with uncommitted changes" if dirty else "")
