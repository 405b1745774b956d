"""How the inspection commands show numbers, times and durations on a terminal."""

from __future__ import annotations

from datetime import UTC, datetime

from kanthorq.admin.views import safe_text

_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


def count(value: int | None, estimated: bool = False) -> str:
    """``1,234``; an estimate as ``~1,234``; unknown as ``?``."""
    if value is None:
        return "?"
    return ("~" if estimated else "") + f"{value:,}"


def duration(ms: int) -> str:
    """``850ms``, ``45s``, ``4m 2s``, ``3h``, ``2d 4h``: the largest unit and the next."""
    ms = abs(ms)
    if ms < 1000:
        return f"{ms}ms"
    for index, (unit, size) in enumerate(_UNITS):
        if ms >= size:
            text = f"{ms // size}{unit}"
            if index + 1 < len(_UNITS):
                next_unit, next_size = _UNITS[index + 1]
                rest = ms % size // next_size
                text += f" {rest}{next_unit}" if rest else ""
            return text
    raise AssertionError("unreachable: ms >= 1000")


def relative(ms: int, now: int) -> str:
    """``3m 2s ago`` or ``in 12s``."""
    if ms <= now:
        return f"{duration(now - ms)} ago"
    return f"in {duration(ms - now)}"


def timestamp(ms: int | None) -> str:
    """A time in UTC, to the second: ``2026-11-28 04:50:01Z``; ``-`` when unset (0)."""
    if not ms:
        return "-"
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def moment(ms: int | None, now: int) -> str:
    """``2026-11-28 04:50:01Z (3m ago)``; ``-`` when unset (0)."""
    if not ms:
        return "-"
    return f"{timestamp(ms)} ({relative(ms, now)})"


def one_line(text: str | None, width: int) -> str:
    """``text`` on one line, safe for a terminal, cut to ``width`` characters."""
    if text is None:
        return ""
    flat = safe_text(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 3] + "..."
