"""The calendar's last day is a day like any other: every rule has a state on it."""

from datetime import date

from tests.listings import states


def test_states_on_the_last_day_of_the_calendar(loaded):
    last = loaded.state("us-h200-export-licensing-cn", as_of=date(9999, 12, 31))
    day_before = loaded.state("us-h200-export-licensing-cn", as_of=date(9999, 12, 30))
    assert (last["status"], last["rate_percent"]) == (day_before["status"], day_before["rate_percent"])
    assert len(states(loaded, as_of=date(9999, 12, 31))) == len(states(loaded, as_of=date(9999, 12, 30))) == 11
