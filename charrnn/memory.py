"""How much memory this process can still take, and refusing work that needs more.

A model or batch too large for the machine would otherwise die in a MemoryError halfway through
allocating, or push the machine into swap for hours. model.training_memory and model.sampling_memory
estimate the need; ``require`` compares it with what is available and refuses with the numbers and the
option to lower.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

from charrnn.errors import ConfigError

# Memory limits of the process's control group (cgroup v2, then v1), as a container sees them mounted;
# "max" (or a huge v1 number) means no limit.
_CGROUP_LIMITS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None  # absent, unreadable, or "max"


def _meminfo_available() -> Optional[int]:
    """MemAvailable of /proc/meminfo: what the kernel can give without swapping (Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _physical() -> Optional[int]:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None  # not a POSIX system that says


def _address_space_left() -> Optional[int]:
    """What ``ulimit -v`` (RLIMIT_AS) leaves of this process's address space, if it is limited."""
    try:
        import resource
    except ImportError:
        return None  # not a Unix system
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(0, limit - used)


def available_bytes() -> Optional[int]:
    """Bytes this process can allocate without swapping, or None when the system does not say.

    The kernel's MemAvailable (else the physical memory), lowered to what the control group's limit
    or the process's address-space limit leaves, if either is set.
    """
    candidates = [_meminfo_available() or _physical(), _address_space_left()]
    for limit_path, usage_path in _CGROUP_LIMITS:
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 1 << 60:
            candidates.append(max(0, limit - usage))
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def format_bytes(count: int) -> str:
    """``count`` bytes for people: 512 B, 3.2 MB, 7.28 TB (powers of 1000, as df -H counts)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    value, unit = float(count), 0
    while value >= 1000 and unit < len(units) - 1:
        value, unit = value / 1000, unit + 1
    return f"{value:.3g} {units[unit]}"


def require(parts: Mapping[str, int], doing: str, advice: str, available: Optional[int] = None) -> None:
    """Raise ConfigError if ``parts`` (bytes by name) add up to more than the memory available.

    ``doing`` names the work ("training this model"), ``advice`` says what to lower. ``available``
    defaults to ``available_bytes()``; when the system does not say, nothing is refused.
    """
    available = available_bytes() if available is None else available
    need = sum(parts.values())
    if available is None or need <= available:
        return
    shown = ", ".join(f"{name} {format_bytes(size)}" for name, size in parts.items() if size)
    raise ConfigError(
        f"{doing} needs about {format_bytes(need)} of memory ({shown}), more than the "
        f"{format_bytes(available)} this machine has available; {advice}"
    )
