"""Sizes and durations as people read them, written once for the CLI and the desktop app."""

from __future__ import annotations


def human_size(n: int | float) -> str:
    """Bytes in decimal units with three significant digits, as `docker images` and docker's progress bars
    show them (go-units' HumanSizeWithPrecision(n, 3)): `512B`, `2.05MB`, `124MB`, `1.2GB`."""
    value = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)}B" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}PB"  # not reached


def binary_size(n: int) -> str:
    """Machine sizes (memory, disk) in binary units: `1 GiB`, `512 MiB`, `1.5 GiB`; a new disk's few blocks
    in KiB (`196 KiB`, not `200704 B`)."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def human_duration(seconds: float) -> str:
    """go-units' HumanDuration, which `docker ps` uses: `Less than a second`, `5 seconds`, `About a minute`,
    `3 hours`, `2 weeks`."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"
