"""Schedules: cron rules in a time zone. Pure helpers shared by the API and the coordinator.

A cron expression has the five classic fields (``minute hour day-of-month month
day-of-week``) or is an alias (``@hourly``, ``@daily``, ``@weekly``, ``@monthly``,
``@yearly``). Slots are computed in the schedule's IANA time zone (so ``0 9 * * *`` in
``Europe/Paris`` stays 09:00 local across daylight-saving changes; a local time that does not
exist on a spring-forward day fires at the first valid time after it) and stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from argosy.errors import UsageError

ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; a ``UsageError`` that says what to give otherwise."""
    try:
        if not name or "\x00" in name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        raise UsageError(
            f"unknown time zone {name!r}; give an IANA name such as 'UTC', 'Europe/Paris' or "
            "'America/New_York'"
        ) from None


def check_cron(cron: str) -> None:
    """Raise ``UsageError`` unless ``cron`` is a five-field expression or an alias."""
    text = cron.strip()
    fields = text.split()
    ok = text.lower() in ALIASES or (len(fields) == 5 and croniter.is_valid(text))
    if not ok:
        raise UsageError(
            f"invalid cron expression {cron!r}; give five fields 'minute hour day-of-month "
            "month day-of-week' (e.g. '0 3 * * *' for 03:00 every day, '*/15 * * * *' every "
            "15 minutes) or an alias such as '@daily'"
        )


def next_fire_after(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot of ``cron`` in ``timezone`` strictly after ``after``, in UTC.

    Raises ``UsageError`` for an invalid expression or zone, or one that never fires
    (such as ``0 0 31 2 *``).
    """
    check_cron(cron)
    local_zone = zone(timezone)
    if after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    try:
        found = croniter(cron.strip(), after.astimezone(local_zone)).get_next(datetime)
    except Exception:  # CroniterBadDateError and friends: no such date within the search
        raise UsageError(
            f"cron expression {cron!r} never fires (no date matches it); check the day and "
            "month fields"
        ) from None
    assert isinstance(found, datetime)
    return found.astimezone(UTC)


def validate_schedule(cron: str, timezone: str, now: datetime | None = None) -> None:
    """Raise ``UsageError`` naming what is wrong with a cron expression or time zone (also
    when it never fires, checked from ``now``, default: the current time)."""
    check_cron(cron)
    zone(timezone)
    next_fire_after(cron, timezone, now or datetime.now(UTC))
