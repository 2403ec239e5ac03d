"""Cron rules of schedules: validating them and finding their next slot in a time zone.

A slot is computed in the schedule's time zone (so ``0 9 * * *`` means 09:00 local time,
across daylight-saving changes) and stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, croniter

from argosy.errors import UsageError


def validate_schedule(cron: str, timezone: str) -> None:
    """Raise ``UsageError`` naming what is wrong with a cron expression or time zone."""
    if not croniter.is_valid(cron):
        raise UsageError(
            f"cron expression {cron!r} is not valid; write five fields like '*/5 * * * *' "
            "(minute hour day-of-month month day-of-week)"
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"time zone {timezone!r} is unknown; use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def next_fire_after(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot of ``cron`` strictly after ``after``, in UTC."""
    zone = ZoneInfo(timezone)
    try:
        following = croniter(cron, after.astimezone(zone)).get_next(datetime)
    except CroniterBadCronError as exc:
        raise UsageError(f"cron expression {cron!r} is not valid: {exc}") from None
    assert isinstance(following, datetime)
    return following.astimezone(UTC)
