"""Schedules: cron parsing, the instants a schedule fires at in a time zone (DST gaps and
overlaps, leap days), and which slots are due (deadlines, catch-up, never twice).

The instants are checked against a model that walks UTC minute by minute and reads the
wall clock, independent of how `Schedule` steps through wall time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether_operator.engine.schedules import Cron, CronError, Schedule, due, run_name


def at(text: str, zone: str = "UTC") -> float:
    """POSIX seconds of ISO wall time `text` in `zone` (first occurrence)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def iso(t: float, zone: str = "UTC") -> str:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat()


# ---------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "minutes", "hours"),
    [
        ("*/15 * * * *", {0, 15, 30, 45}, set(range(24))),
        ("5,10-12 9-17/4 * * *", {5, 10, 11, 12}, {9, 13, 17}),
        ("@hourly", {0}, set(range(24))),
        ("@daily", {0}, {0}),
        ("30 2 * * 7", {30}, {2}),
    ],
)
def test_fields_parse(text: str, minutes: set[int], hours: set[int]) -> None:
    cron = Cron.parse(text)
    assert (set(cron.minutes), set(cron.hours)) == (minutes, hours)


def test_names_and_sunday_as_seven() -> None:
    cron = Cron.parse("0 0 * jan-mar sun,Sat")
    assert set(cron.months) == {1, 2, 3}
    assert set(cron.weekdays) == {0, 6}
    assert Cron.parse("0 0 * * 7").weekdays == Cron.parse("0 0 * * 0").weekdays


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("* * * *", "has 4 fields; a cron expression has 5"),
        ("* * * * * * *", "has 7 fields"),
        ("60 * * * * *", "second field: 60 is out of range 0-59"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "day of month field: 0 is out of range 1-31"),
        ("* * * 13 *", "month field: 13 is out of range 1-12"),
        ("* * * FOO *", "month field: 'FOO' is not a number or a name"),
        ("* * * * 8", "day of week field: 8 is out of range 0-7"),
        ("*/0 * * * *", "the step in '*/0' must be at least 1"),
        ("5-1 * * * *", "the range '5-1' runs backwards"),
        ("0 0 30 2 *", "never happens"),
        ("0 0 31 4,6 *", "never happens"),
        ("@every 5m", "is not a macro"),
        ("1;2 * * * *", "is not `*`, N, N-M or one with /STEP"),
    ],
)
def test_bad_expressions_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(CronError) as raised:
        Cron.parse(text)
    assert says in str(raised.value)


def test_a_schedule_names_the_expression_or_the_zone_at_fault() -> None:
    with pytest.raises(CronError, match=r"^schedules\[1\]: minute field"):
        Schedule.parse(["@hourly", "61 * * * *"])
    with pytest.raises(CronError, match=r"^timeZone: 'Mars/Olympus' is not an IANA"):
        Schedule.parse(["@hourly"], "Mars/Olympus")
    with pytest.raises(CronError, match="at least one"):
        Schedule.parse([])


# ---------------------------------------------------------------------- instants


def test_leap_days() -> None:
    s = Schedule.parse(["0 12 29 2 *"])
    assert iso(s.next_after(at("2025-03-01T00:00:00")) or 0) == "2028-02-29T12:00:00+00:00"
    # 2100 is no leap year: the next 29 February after 2096's is in 2104.
    assert iso(s.next_after(at("2096-03-01T00:00:00")) or 0) == "2104-02-29T12:00:00+00:00"


def test_both_day_fields_restricted_match_either() -> None:
    s = Schedule.parse(["0 0 13 * FRI"])  # the 13th, and every Friday
    fired = [iso(t)[:10] for t in s.slots(at("2026-11-01T00:00:00"), at("2026-11-30T00:00:00"))]
    assert fired == ["2026-11-06", "2026-11-13", "2026-11-20", "2026-11-27"]


def test_a_dst_gap_fires_once_at_its_end() -> None:
    zone = "America/New_York"  # 2027-03-14: 02:00 EST jumps to 03:00 EDT
    s = Schedule.parse(["30 2 * * *", "45 2 * * *"], zone)
    got = [
        iso(t, zone)
        for t in s.slots(at("2027-03-13T12:00:00", zone), at("2027-03-15T12:00:00", zone))
    ]
    assert got == [
        "2027-03-14T03:00:00-04:00",  # 02:30 and 02:45 do not exist that night: one slot
        "2027-03-15T02:30:00-04:00",
        "2027-03-15T02:45:00-04:00",
    ]


def test_a_dst_overlap_fires_once_at_its_first_occurrence() -> None:
    zone = "America/New_York"  # 2027-11-07: 02:00 EDT falls back to 01:00 EST
    s = Schedule.parse(["30 1 * * *"], zone)
    first = at("2027-11-07T01:30:00", zone)  # fold 0: EDT
    got = s.slots(at("2027-11-07T00:00:00", zone), at("2027-11-07T04:00:00", zone))
    assert got == [first]
    assert iso(first, zone) == "2027-11-07T01:30:00-04:00"
    # Asked from inside the second 01:xx hour, the next one is the next day's.
    second_hour = first + 3600 + 60
    assert iso(s.next_after(second_hour) or 0, zone) == "2027-11-08T01:30:00-05:00"


ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu"]
TRANSITIONS = [
    "2027-03-14T00:00:00",  # New York spring
    "2027-11-06T20:00:00",  # New York autumn
    "2027-03-27T20:00:00",  # Berlin spring
    "2027-10-30T20:00:00",  # Berlin autumn
    "2027-04-03T12:00:00",  # Lord Howe: half-hour DST, autumn
    "2027-10-02T12:00:00",  # Lord Howe spring
    "2028-02-27T00:00:00",  # a leap day
]


def model(cron: str, zone_name: str, after: float, until: float) -> list[float]:
    """The instants in (after, until] a one-expression schedule fires at, minute by minute
    in UTC: a minute fires if its wall time matches and it is that wall time's first
    occurrence, or if the clock just jumped over a matching wall time."""
    parsed, zone = Cron.parse(cron), ZoneInfo(zone_name)

    def wall(u: float) -> datetime:
        return datetime.fromtimestamp(u, zone).replace(tzinfo=None)

    def matches(w: datetime) -> bool:
        return (
            parsed.day_matches(w.date()) and w.hour in parsed.hours and w.minute in parsed.minutes
        )

    out = []
    u = (int(after) // 60 + 1) * 60
    while u <= until:
        w, before = wall(u), wall(u - 60)
        jumped = w - before > timedelta(minutes=1)
        skipped = [
            before + timedelta(minutes=k) for k in range(1, (w - before) // timedelta(minutes=1))
        ]
        earlier = any(wall(u - 60 * k) == w for k in range(1, 181))
        if (matches(w) and not earlier) or (jumped and any(matches(x) for x in skipped)):
            out.append(float(u))
        u += 60
    return out


crons = st.builds(
    lambda m, h, d, w: f"{m} {h} {d} * {w}",
    st.sampled_from(["*/7", "0", "30", "15,45", "*/20", "59"]),
    st.sampled_from(["*", "1", "2", "1-3", "*/2", "0"]),
    st.sampled_from(["*", "*", "29", "1-15"]),
    st.sampled_from(["*", "*", "0", "1-5"]),
)


@settings(max_examples=60, deadline=None)
@given(
    cron=crons,
    zone=st.sampled_from(ZONES),
    start=st.sampled_from(TRANSITIONS),
    offset=st.integers(0, 24 * 60),
    span=st.integers(60, 2 * 24 * 60),
)
def test_instants_match_the_minute_by_minute_model(
    cron: str, zone: str, start: str, offset: int, span: int
) -> None:
    after = at(start) + offset * 60 + 17  # off the minute, too
    until = after + span * 60
    assert Schedule.parse([cron], zone).slots(after, until) == model(cron, zone, after, until)


# ---------------------------------------------------------------------- due slots


def test_a_new_schedule_starts_the_slot_that_is_due_and_nothing_before_it() -> None:
    s = Schedule.parse(["*/5 * * * *"])
    created = at("2026-12-07T10:02:00")
    assert due(s, created, at("2026-12-07T10:04:59")).start == []
    got = due(s, created, at("2026-12-07T10:05:01"))
    assert (got.start, got.skipped, got.last) == ([at("2026-12-07T10:05:00")], [], got.start[0])


def test_catch_up_after_the_operator_was_down() -> None:
    s = Schedule.parse(["0 * * * *"])
    last = at("2026-12-07T00:00:00")
    now = at("2026-12-07T05:00:30")  # down for five slots; the 05:00 one is on time
    hours = [at(f"2026-12-07T0{h}:00:00") for h in range(1, 6)]
    none = due(s, last, now, starting_deadline=60, catch_up="None")
    assert (none.start, none.skipped) == ([hours[4]], hours[:4])
    all_ = due(s, last, now, starting_deadline=60, catch_up="All", max_catch_up=2)
    assert (all_.start, all_.skipped) == (hours[2:], hours[:2])
    late = at("2026-12-07T05:03:00")  # past the deadline: nothing is on time
    last_ = due(s, last, late, starting_deadline=60, catch_up="Last")
    assert (last_.start, last_.skipped) == ([hours[4]], hours[:4])
    with_on_time = due(s, last, now, starting_deadline=60, catch_up="Last")
    assert with_on_time.start == [hours[4]]
    # No deadline: the latest slot starts however late, as a CronJob's does.
    assert due(s, last, late).start == [hours[4]]


@settings(max_examples=80, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 400), min_size=1, max_size=60),
    deadline=st.integers(30, 300),
    catch_up=st.sampled_from(["None", "Last", "All"]),
    bound=st.integers(0, 5),
    zone=st.sampled_from(ZONES),
)
def test_each_slot_is_acted_on_once_and_none_is_skipped_while_someone_looks(
    gaps: list[int], deadline: int, catch_up: str, bound: int, zone: str
) -> None:
    s = Schedule.parse(["*/3 * * * *", "1 * * * *"], zone)
    created = at("2027-03-28T00:58:00", "Europe/Berlin")
    last, now = created, created
    started: list[float] = []
    skipped: list[float] = []
    for gap in gaps:
        now += gap
        got = due(s, last, now, starting_deadline=deadline, catch_up=catch_up, max_catch_up=bound)  # type: ignore[arg-type]
        assert len(got.start) <= 1 + max(bound, 1) + deadline // 60
        started += got.start
        skipped += got.skipped
        if got.last is not None:
            last = got.last
        if gap <= deadline:  # looked again within the deadline: nothing was missed
            assert got.skipped == []
    every = s.slots(created, now)
    assert sorted(started + skipped) == every  # each slot once, started or skipped
    assert len(set(started)) == len(started)


def test_run_names_are_the_slots_minute() -> None:
    assert run_name("nightly", at("2026-12-07T02:00:00")) == "nightly-29943480"
    assert run_name("n" * 60, 0.0) == "n" * 52 + "-0"
    assert run_name("r", 59.9) == run_name("r", 0.0)


def test_run_names_of_a_schedule_with_seconds_are_the_slots_second() -> None:
    assert run_name("fast", 90.0, seconds=True) == "fast-90"
    assert Schedule.parse(["*/10 * * * * *"]).has_seconds
    assert not Schedule.parse(["0 * * * * *", "@hourly"]).has_seconds


# ---------------------------------------------------------------------- seconds


def test_a_six_field_expression_has_a_leading_second_field() -> None:
    s = Schedule.parse(["*/20 * * * * *"])
    start = at("2026-12-07T10:00:05")
    assert [iso(t) for t in s.slots(start, start + 60)] == [
        "2026-12-07T10:00:20+00:00",
        "2026-12-07T10:00:40+00:00",
        "2026-12-07T10:01:00+00:00",
    ]
    assert Cron.parse("* * * * *").seconds == {0}


def test_seconds_in_a_dst_gap_fire_once_at_its_end() -> None:
    s = Schedule.parse(["30 30 2 * * *"], "Europe/Berlin")  # 02:30:30 does not exist
    start = at("2026-03-29T00:00:00", "Europe/Berlin")
    assert [iso(t, "Europe/Berlin") for t in s.slots(start, start + 6 * 3600)] == [
        "2026-03-29T03:00:00+02:00"
    ]


@settings(max_examples=40, deadline=None)
@given(
    seconds=st.sampled_from(["*/15", "0", "7,53", "*/7", "59"]),
    zone=st.sampled_from(ZONES),
    start=st.sampled_from(TRANSITIONS),
    offset=st.integers(-3 * 3600, 3 * 3600),
)
def test_seconds_match_a_second_by_second_model(
    seconds: str, zone: str, start: str, offset: int
) -> None:
    after = at(start) + offset + 0.5
    until = after + 3 * 3600
    tz = ZoneInfo(zone)
    allowed = Cron.parse(f"{seconds} * * * * *").seconds
    # A gap skips whole minutes, each holding a matching second: its end fires.
    expected, seen = [], set()
    u = int(after) + 1
    while u <= until:
        w = datetime.fromtimestamp(u, tz).replace(tzinfo=None)
        jumped = w - datetime.fromtimestamp(u - 1, tz).replace(tzinfo=None) > timedelta(seconds=1)
        if (w.second in allowed or jumped) and w not in seen:
            expected.append(float(u))
        seen.add(w)
        u += 1
    assert Schedule.parse([f"{seconds} * * * * *"], zone).slots(after, until) == expected
