"""When a schedule fires: cron expressions in a time zone, and which slots are due.

Pure: no clock is read and nothing is stored; times are POSIX seconds passed in.

Cron expressions have five fields, `minute hour day-of-month month day-of-week`, as
Kubernetes CronJobs take them, or six with a leading `second` field (as Quartz and
robfig/cron's `WithSeconds` take them) for schedules finer than a minute:
- `*`, lists (`1,15`), ranges (`1-5`) and steps (`*/15`, `10-50/20`);
- month names `JAN`-`DEC` and weekday names `SUN`-`SAT` (case-insensitive); weekday 7
  is Sunday, as 0 is;
- when both day fields are restricted, a day matches either one, as in cron;
- macros: `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
  `@hourly`.

A schedule is evaluated in its time zone's wall-clock time:
- A wall-clock time that does not exist (a DST gap: 02:30 when clocks jump from 02:00
  to 03:00) fires once, at the end of the gap. Several such times collapse into that
  one slot.
- A wall-clock time that happens twice (a DST overlap) fires once, at its first
  occurrence.

Slots are instants, each fired at most once. `due` decides which slots to start at
`now`:
- Slots whose lateness is within the starting deadline are on time and start.
- Without a deadline, only the latest slot is on time, however late it is (as a
  CronJob does).
- The catch-up policy decides about the others, which were missed while nothing was
  looking: `None` skips them, `Last` starts the latest of them when no slot is on time,
  `All` starts them all, the most recent `max_catch_up` ones.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CATCH_UP_POLICIES",
    "CatchUp",
    "Cron",
    "CronError",
    "Due",
    "Schedule",
    "due",
    "run_name",
]

CatchUp = Literal["None", "Last", "All"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("None", "Last", "All")

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_SECOND_FIELD: tuple[str, int, int, dict[str, int]] = ("second", 0, 59, {})
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_ITEM = re.compile(r"^(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(\d+))?$")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
"""The most days each month can have (February in a leap year)."""
_HORIZON_DAYS = 366 * 9
"""How far `next_wall` looks: a leap day can be eight years away (2096 to 2104)."""


class CronError(ValueError):
    """A cron expression or time zone that cannot be used; the message says why."""


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        known = f" or a name ({', '.join(names)})" if names else ""
        raise CronError(f"{name} field: {text!r} is not a number{known}")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name} field: {value} is out of range {low}-{high}")
    return value


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        found = _ITEM.match(item)
        if found is None:
            raise CronError(f"{name} field: {item!r} is not `*`, N, N-M or one with /STEP")
        span, step_text = found.groups()
        step = int(step_text) if step_text is not None else 1
        if step < 1:
            raise CronError(f"{name} field: the step in {item!r} must be at least 1")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, b = span.split("-")
            first, last = _value(a, name, low, high, names), _value(b, name, low, high, names)
            if first > last:
                raise CronError(f"{name} field: the range {item!r} runs backwards")
        else:
            first = _value(span, name, low, high, names)
            last = high if step_text is not None else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """One parsed cron expression."""

    text: str
    seconds: frozenset[int]
    """{0} for a five-field expression."""
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 is Sunday (7 is folded into 0)."""
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """The expression `text`; raises `CronError` naming the field at fault."""
        spec = MACROS.get(text.strip().lower(), text.strip())
        if spec.startswith("@"):
            raise CronError(f"{text!r} is not a macro ({', '.join(MACROS)})")
        parts = spec.split()
        if len(parts) not in (5, 6):
            raise CronError(
                f"{text!r} has {len(parts)} fields; a cron expression has 5: "
                "minute hour day-of-month month day-of-week (or 6, with a leading second; "
                "or a macro such as @hourly)"
            )
        seconds = frozenset({0})
        if len(parts) == 6:
            seconds = _field(parts[0], *_SECOND_FIELD)
            parts = parts[1:]
        fields = [_field(p, *f) for p, f in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in fields[4])
        any_day, any_weekday = parts[2].startswith("*"), parts[4].startswith("*")
        minutes, hours, days, months = fields[:4]
        cron = cls(text, seconds, minutes, hours, days, months, weekdays, any_day, any_weekday)
        if cron.any_weekday and not any(
            day <= _DAYS_IN_MONTH[month - 1] for day in cron.days for month in cron.months
        ):
            raise CronError(f"{text!r} never happens: no month of it has such a day")
        return cron

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week  # both restricted: either one, as in cron

    def next_wall(self, start: datetime) -> datetime | None:
        """The first naive wall-clock second at or after `start` that matches."""
        t = start.replace(microsecond=0) + (
            timedelta(seconds=1) if start.microsecond else timedelta()
        )
        limit = t + timedelta(days=_HORIZON_DAYS)
        while t < limit:
            if not self.day_matches(t.date()):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif (
                t.minute not in self.minutes
                or (second := min((s for s in self.seconds if s >= t.second), default=None)) is None
            ):
                t = t.replace(second=0) + timedelta(minutes=1)
            else:
                return t.replace(second=second)
        return None


@dataclass(frozen=True, slots=True)
class Schedule:
    """Cron expressions in a time zone: the instants they fire at."""

    crons: tuple[Cron, ...]
    zone: ZoneInfo

    @property
    def has_seconds(self) -> bool:
        """Whether some expression fires at a second other than :00."""
        return any(cron.seconds != frozenset({0}) for cron in self.crons)

    @classmethod
    def parse(cls, expressions: Sequence[str], time_zone: str = "UTC") -> Schedule:
        """Raises `CronError` naming the expression (`schedules[i]`) or `timeZone`."""
        if not expressions:
            raise CronError("schedules: give at least one cron expression")
        crons = []
        for i, text in enumerate(expressions):
            try:
                crons.append(Cron.parse(text))
            except CronError as exc:
                raise CronError(f"schedules[{i}]: {exc}") from None
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(
                f"timeZone: {time_zone!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)"
            ) from None
        return cls(tuple(crons), zone)

    def next_after(self, t: float) -> float | None:
        """The first instant after `t` (POSIX seconds) this schedule fires at."""
        found = [s for cron in self.crons if (s := self._next(cron, t)) is not None]
        return min(found) if found else None

    def slots(self, after: float, until: float) -> list[float]:
        """Every instant in (`after`, `until`] this schedule fires at, oldest first."""
        out: list[float] = []
        t = after
        while (s := self.next_after(t)) is not None and s <= until:
            out.append(s)
            t = s
        return out

    def _next(self, cron: Cron, t: float) -> float | None:
        start = datetime.fromtimestamp(t, self.zone).replace(tzinfo=None)
        # In an overlap's second hour the wall times ahead already fired (their first
        # occurrence is before `t`): step past them.
        while (candidate := cron.next_wall(start)) is not None:
            instant = self._instant(candidate)
            if instant > t:
                return instant
            start = candidate + timedelta(seconds=1)
        return None

    def _instant(self, wall: datetime) -> float:
        """The instant of naive wall time `wall`: its first occurrence, or the end of the
        gap it falls in."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        if first.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall:
            return first.timestamp()
        later = wall.replace(second=0)
        while True:  # in a gap (at most a few hours): the first wall minute after it
            later += timedelta(minutes=1)
            moved = later.replace(tzinfo=self.zone, fold=0)
            if moved.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == later:
                return moved.timestamp()


@dataclass(frozen=True, slots=True)
class Due:
    """What to do at `now`: the slots to start and those skipped, oldest first."""

    start: list[float]
    skipped: list[float]

    @property
    def last(self) -> float | None:
        """The latest slot acted on (started or skipped): the next call starts after it."""
        acted = self.start + self.skipped
        return max(acted) if acted else None


def due(
    schedule: Schedule,
    last: float,
    now: float,
    *,
    starting_deadline: float | None = None,
    catch_up: CatchUp = "None",
    max_catch_up: int = 10,
) -> Due:
    """The slots in (`last`, `now`] to start now, and those to skip (module docstring).

    `last` is the latest slot acted on before, or the schedule's creation time.
    """
    window = schedule.slots(last, now)
    if not window:
        return Due([], [])
    if starting_deadline is None:
        on_time, late = [window[-1]], window[:-1]
    else:
        on_time = [s for s in window if now - s <= starting_deadline]
        late = [s for s in window if now - s > starting_deadline]
    if catch_up == "All":
        caught = late[-max_catch_up:] if max_catch_up > 0 else []
    elif catch_up == "Last" and not on_time:
        caught = late[-1:]
    else:
        caught = []
    chosen = set(caught)
    return Due(start=sorted([*caught, *on_time]), skipped=[s for s in late if s not in chosen])


def run_name(schedule_name: str, slot: float, *, seconds: bool = False) -> str:
    """The WorkflowRun name of a slot: the schedule's name (cut to 52 characters, as a
    CronJob's) and the slot's minute since the epoch (its second, for a schedule with
    `seconds`). The same slot gives the same name, so it can never be started twice."""
    return f"{schedule_name[:52]}-{int(slot) if seconds else int(slot // 60)}"
