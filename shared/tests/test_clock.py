"""parley.clock: the clinic's zone and the pinned "now", read from the
environment with errors that name the variable; the machine's zone found the
way the C library finds it."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from parley.clock import Clock, machine_zone

NY = ZoneInfo("America/New_York")


def test_pinned_now_is_wall_time_in_the_clinics_zone_and_stands_still():
    clock = Clock.from_env({"PARLEY_TIMEZONE": "America/New_York", "PARLEY_NOW": "2026-11-28T09:30:00"})
    assert clock.now() == dt.datetime(2026, 11, 28, 9, 30, tzinfo=NY)
    assert clock.now().utcoffset() == dt.timedelta(hours=-5)
    assert clock.today() == dt.date(2026, 11, 28) and clock.now().strftime("%A") == "Saturday"
    assert clock.wall() == dt.datetime(2026, 11, 28, 9, 30)
    # Any event time reads as the pin: the calendar does not move.
    assert clock.local(0.0) == clock.local(time.time()) == clock.now()
    assert "America/New_York" in clock.describe() and "Saturday" in clock.describe()


def test_a_pinned_instant_with_an_offset_is_converted_to_the_clinics_zone():
    clock = Clock.from_env({"PARLEY_TIMEZONE": "America/New_York", "PARLEY_NOW": "2026-11-25T03:00:00Z"})
    assert clock.wall() == dt.datetime(2026, 11, 24, 22, 0)  # still Tuesday at the clinic


def test_unpinned_follows_the_real_clock_in_the_clinics_zone():
    clock = Clock.from_env({"PARLEY_TIMEZONE": "Asia/Tokyo"})
    before = dt.datetime.now(dt.timezone.utc)
    now = clock.now()
    after = dt.datetime.now(dt.timezone.utc)
    assert before <= now <= after
    assert now.utcoffset() == dt.timedelta(hours=9)


@pytest.mark.parametrize(
    "env, variable, value",
    [
        ({"PARLEY_TIMEZONE": "Mars/Olympus_Mons"}, "PARLEY_TIMEZONE", "Mars/Olympus_Mons"),
        ({"PARLEY_TIMEZONE": "../../etc/passwd"}, "PARLEY_TIMEZONE", "../../etc/passwd"),
        ({"PARLEY_TIMEZONE": "UTC", "PARLEY_NOW": "next saturday"}, "PARLEY_NOW", "next saturday"),
        ({"PARLEY_TIMEZONE": "UTC", "PARLEY_NOW": "2026-13-01T00:00"}, "PARLEY_NOW", "2026-13-01T00:00"),
    ],
)
def test_bad_settings_name_the_variable_and_the_value(env, variable, value):
    with pytest.raises(ValueError) as err:
        Clock.from_env(env)
    assert variable in str(err.value) and repr(value) in str(err.value)


def test_machine_zone_comes_from_tz_then_etc_localtime(tmp_path):
    assert machine_zone({"TZ": "Europe/Paris"}) == ZoneInfo("Europe/Paris")
    assert machine_zone({"TZ": ":Europe/Paris"}) == ZoneInfo("Europe/Paris")
    zoneinfo = tmp_path / "usr" / "share" / "zoneinfo" / "America"
    zoneinfo.mkdir(parents=True)
    (zoneinfo / "Chicago").write_bytes((tz_file := _tzif("America/Chicago")))
    link = tmp_path / "localtime"
    link.symlink_to(zoneinfo / "Chicago")
    assert machine_zone({}, localtime=link) == ZoneInfo("America/Chicago")
    # A copied file (no link to follow) still gives the right rules.
    copied = tmp_path / "copied"
    copied.write_bytes(tz_file)
    zone = machine_zone({}, localtime=copied)
    july = dt.datetime(2026, 7, 1, 12, tzinfo=dt.timezone.utc).astimezone(zone)
    assert july.utcoffset() == dt.timedelta(hours=-5)  # CDT
    assert machine_zone({}, localtime=tmp_path / "missing") == dt.timezone.utc
    # With no PARLEY_TIMEZONE the clinic is where the machine is.
    assert Clock.from_env({"TZ": "Europe/Paris"}).zone == ZoneInfo("Europe/Paris")


def _tzif(key: str) -> bytes:
    import importlib.resources

    try:
        return importlib.resources.files("tzdata.zoneinfo").joinpath(*key.split("/")).read_bytes()
    except ModuleNotFoundError:
        with open(f"/usr/share/zoneinfo/{key}", "rb") as f:
            return f.read()


def test_fixed_for_tests():
    assert Clock.fixed("2026-11-29T10:00", "Europe/London").today() == dt.date(2026, 11, 29)
    assert Clock.fixed(dt.datetime(2026, 11, 29, 23, 30), "UTC").wall() == dt.datetime(2026, 11, 29, 23, 30)
    with pytest.raises(ValueError, match="naive"):
        Clock(ZoneInfo("UTC"), dt.datetime(2026, 1, 1))
