"""The pure fold from actions to a state, against the contract's table and its edge cases.

No storage here: actions are built by hand, with an explicit record order.
"""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from timeline.domain.dates import PolicyDate
from timeline.domain.fold import Action, State, segments, state_on

_order = itertools.count(1)


def act(
    id: str,
    kind: str,
    effective: str,
    *,
    rate: float | None = None,
    until: str | None = None,
    conditions: list[str] | None = None,
    order: int | None = None,
) -> Action:
    """An action as the fold sees it; record order follows creation unless given."""
    return Action(
        id=id,
        kind=kind,
        effective=PolicyDate.parse(effective),
        order=next(_order) if order is None else order,
        rate_percent=rate,
        until=PolicyDate.parse(until) if until else None,
        conditions=tuple(conditions) if conditions is not None else None,
    )


def on(actions: list[Action], day: str) -> State:
    return state_on(actions, date.fromisoformat(day))


# Every row of the contract's table --------------------------------------------------------


def test_no_actions_is_status_none():
    assert on([], "2025-12-09") == State()
    assert State().status == "none" and State().rate_percent is None and State().since is None


def test_an_action_counts_only_from_its_effective_day():
    actions = [act("b", "ban", "2025-12-08")]
    assert on(actions, "2025-12-07").status == "none"
    assert on(actions, "2025-12-07").based_on == ()
    assert on(actions, "2025-12-08").status == "banned"


@pytest.mark.parametrize("kind, status", [("ban", "banned"), ("restrict", "restricted"),
                                          ("ease", "eased")])
def test_ban_restrict_and_ease_set_their_status_and_keep_the_rate(kind, status):
    actions = [
        act("f", "fee", "2025-01-01", rate=20),
        act("x", kind, "2025-06-01"),
    ]
    state = on(actions, "2025-07-01")
    assert state.status == status
    assert state.rate_percent == 20
    assert state.since == "2025-06-01"
    assert state.based_on == ("f", "x")


@pytest.mark.parametrize("kind", ["ban", "restrict", "ease", "fee", "pause", "propose"])
def test_conditions_given_replace_the_current_ones(kind):
    extra = {"rate": 5} if kind == "fee" else {}
    actions = [
        act("r", "restrict", "2025-01-01", conditions=["licence needed"]),
        act("x", kind, "2025-06-01", conditions=["approved customers only"], **extra),
    ]
    state = on(actions, "2025-07-01")
    if kind == "pause":
        # Nothing is in force while paused; the new conditions come back when the pause ends.
        assert state.conditions == ()
        assert on(actions + [act("z", "resume", "2025-08-01")], "2025-09-01").conditions == (
            "approved customers only",
        )
    else:
        assert state.conditions == ("approved customers only",)


@pytest.mark.parametrize("kind", ["ban", "restrict", "ease", "fee", "propose"])
def test_conditions_not_given_are_kept(kind):
    extra = {"rate": 5} if kind == "fee" else {}
    actions = [
        act("r", "restrict", "2025-01-01", conditions=["licence needed"]),
        act("x", kind, "2025-06-01", **extra),
    ]
    assert on(actions, "2025-07-01").conditions == ("licence needed",)


def test_an_empty_list_of_conditions_clears_them():
    actions = [
        act("r", "restrict", "2025-01-01", conditions=["licence needed"]),
        act("e", "ease", "2025-06-01", conditions=[]),
    ]
    assert on(actions, "2025-07-01").conditions == ()


@pytest.mark.parametrize("before", ["none", "proposed", "lifted"])
def test_a_fee_puts_a_measure_that_was_not_in_force_in_force(before):
    setup = {
        "none": [],
        "proposed": [act("p", "propose", "2025-01-01")],
        "lifted": [act("b", "ban", "2024-01-01"), act("l", "lift", "2025-01-01")],
    }[before]
    actions = setup + [act("f", "fee", "2025-10-01", rate=10)]
    state = on(actions, "2025-10-15")
    assert (state.status, state.rate_percent, state.since) == ("in_force", 10, "2025-10-01")


@pytest.mark.parametrize("kind, status", [("ban", "banned"), ("restrict", "restricted"),
                                          ("ease", "eased")])
def test_a_fee_keeps_a_status_that_is_already_a_measure(kind, status):
    actions = [act("x", kind, "2025-01-01"), act("f", "fee", "2025-12-08", rate=25)]
    state = on(actions, "2025-12-09")
    assert (state.status, state.rate_percent, state.since) == (status, 25, "2025-01-01")


def test_a_later_fee_changes_the_rate_but_not_since():
    actions = [act("f1", "fee", "2025-02-04", rate=20), act("f2", "fee", "2025-11-10", rate=10)]
    assert on(actions, "2025-05-01").rate_percent == 20
    state = on(actions, "2025-12-09")
    assert (state.status, state.rate_percent, state.since) == ("in_force", 10, "2025-02-04")


def test_a_fee_of_zero_removes_the_rate_and_leaves_the_status():
    actions = [act("f1", "fee", "2025-02-04", rate=20), act("f0", "fee", "2025-11-10", rate=0)]
    state = on(actions, "2025-12-09")
    assert (state.status, state.rate_percent, state.since) == ("in_force", None, "2025-02-04")
    assert state.based_on == ("f1", "f0")


@pytest.mark.parametrize("before", ["none", "proposed", "lifted"])
def test_a_fee_of_zero_does_not_put_anything_in_force(before):
    setup = {
        "none": [],
        "proposed": [act("p", "propose", "2025-01-01")],
        "lifted": [act("b", "ban", "2024-01-01"), act("l", "lift", "2025-01-01")],
    }[before]
    state = on(setup + [act("f0", "fee", "2025-10-01", rate=0)], "2025-10-15")
    assert state.status == before
    assert state.rate_percent is None


def test_pause_suspends_everything_until_its_until_day():
    actions = [
        act("r", "restrict", "2025-01-01", conditions=["licence needed"]),
        act("f", "fee", "2025-02-01", rate=15),
        act("p", "pause", "2025-11-10", until="2026-11-10"),
    ]
    paused = on(actions, "2025-12-09")
    assert paused.status == "paused"
    assert paused.rate_percent is None
    assert paused.conditions == ()
    assert paused.since == "2025-11-10"
    assert paused.until == "2026-11-10"
    assert paused.based_on == ("r", "f", "p")

    assert on(actions, "2026-11-09").status == "paused"
    back = on(actions, "2026-11-10")  # the pause ends on its until day
    assert back.status == "restricted"
    assert back.rate_percent == 15
    assert back.conditions == ("licence needed",)
    assert back.since == "2026-11-10"
    assert back.until is None
    assert back.certain


def test_pause_without_until_lasts_until_something_ends_it():
    actions = [act("b", "ban", "2025-01-01"), act("p", "pause", "2025-06-01")]
    for day in ("2025-06-01", "2030-01-01", "9999-12-31"):
        state = on(actions, day)
        assert (state.status, state.until, state.since) == ("paused", None, "2025-06-01")


def test_resume_brings_back_what_the_pause_suspended():
    actions = [
        act("e", "ease", "2025-01-01", conditions=["approved customers"]),
        act("f", "fee", "2025-01-01", rate=25),
        act("p", "pause", "2025-03-01", until="2025-12-01"),
        act("u", "resume", "2025-05-15"),
    ]
    assert on(actions, "2025-05-14").status == "paused"
    state = on(actions, "2025-05-15")
    assert state.status == "eased"
    assert state.rate_percent == 25
    assert state.conditions == ("approved customers",)
    assert state.since == "2025-05-15"
    assert state.until is None
    # The pause's until no longer matters once a resume ended it.
    assert on(actions, "2025-12-01") == on(actions, "2025-11-30")


def test_resume_without_a_pause_changes_nothing():
    actions = [act("f", "fee", "2025-01-01", rate=20, conditions=["all goods"])]
    before = on(actions, "2025-06-01")
    after = on(actions + [act("u", "resume", "2025-03-01")], "2025-06-01")
    assert (after.status, after.rate_percent, after.conditions, after.since, after.until) == (
        before.status, before.rate_percent, before.conditions, before.since, before.until,
    )


def test_resume_after_the_pause_already_ended_changes_nothing():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("p", "pause", "2025-02-01", until="2025-03-01"),
        act("u", "resume", "2025-04-01"),
    ]
    state = on(actions, "2025-05-01")
    assert (state.status, state.since) == ("restricted", "2025-03-01")


def test_lift_ends_the_measure_and_clears_rate_and_conditions():
    actions = [
        act("r", "restrict", "2025-01-01", conditions=["licence needed"]),
        act("f", "fee", "2025-02-01", rate=15),
        act("l", "lift", "2025-06-01"),
    ]
    state = on(actions, "2025-07-01")
    assert (state.status, state.rate_percent, state.conditions, state.since) == (
        "lifted", None, (), "2025-06-01",
    )


def test_propose_sets_proposed_on_nothing():
    state = on([act("p", "propose", "2025-12-04")], "2025-12-09")
    assert (state.status, state.since) == ("proposed", "2025-12-04")


def test_propose_sets_proposed_after_a_lift():
    actions = [act("b", "ban", "2020-01-01"), act("l", "lift", "2021-01-01"),
               act("p", "propose", "2025-12-04")]
    assert on(actions, "2025-12-09").status == "proposed"


@pytest.mark.parametrize("kind, status", [("ban", "banned"), ("restrict", "restricted"),
                                          ("ease", "eased")])
def test_propose_does_not_override_a_measure_in_force(kind, status):
    actions = [act("x", kind, "2022-01-01"), act("p", "propose", "2025-12-04")]
    state = on(actions, "2025-12-09")
    assert (state.status, state.since) == (status, "2022-01-01")
    assert state.based_on == ("x", "p")


def test_propose_does_not_override_a_fee_in_force_or_a_pause():
    fee = [act("f", "fee", "2025-01-01", rate=10), act("p", "propose", "2025-12-04")]
    assert on(fee, "2025-12-09").status == "in_force"
    assert on(fee, "2025-12-09").rate_percent == 10
    paused = [act("b", "ban", "2025-01-01"), act("z", "pause", "2025-02-01"),
              act("p", "propose", "2025-12-04")]
    assert on(paused, "2025-12-09").status == "paused"


def test_propose_on_a_proposal_keeps_the_first_since():
    actions = [act("p1", "propose", "2025-12-04"), act("p2", "propose", "2025-12-06")]
    assert on(actions, "2025-12-09").since == "2025-12-04"


# Pauses in depth ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind, status", [("ban", "banned"), ("restrict", "restricted"),
                                          ("ease", "eased")])
def test_ban_restrict_and_ease_end_a_pause_and_bring_back_its_rate(kind, status):
    actions = [
        act("r", "restrict", "2025-01-01", conditions=["licence needed"]),
        act("f", "fee", "2025-01-01", rate=15),
        act("p", "pause", "2025-03-01", until="2026-03-01"),
        act("x", kind, "2025-06-01"),
    ]
    state = on(actions, "2025-07-01")
    assert state.status == status
    assert state.rate_percent == 15
    assert state.conditions == ("licence needed",)
    assert state.since == "2025-06-01"
    assert state.until is None
    # The ended pause's until day brings nothing back.
    assert on(actions, "2026-03-01") == on(actions, "2026-02-28")


def test_lift_ends_a_pause_for_good():
    actions = [
        act("f", "fee", "2025-01-01", rate=15),
        act("p", "pause", "2025-03-01", until="2026-03-01"),
        act("l", "lift", "2025-06-01"),
    ]
    for day in ("2025-07-01", "2026-03-01", "2027-01-01"):
        state = on(actions, day)
        assert (state.status, state.rate_percent, state.until, state.since) == (
            "lifted", None, None, "2025-06-01",
        )


def test_a_fee_inside_a_pause_changes_the_rate_that_comes_back():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("f1", "fee", "2025-01-01", rate=20),
        act("p", "pause", "2025-03-01", until="2025-09-01"),
        act("f2", "fee", "2025-05-01", rate=30, conditions=["steel only"]),
    ]
    during = on(actions, "2025-06-01")
    assert (during.status, during.rate_percent, during.conditions, during.since) == (
        "paused", None, (), "2025-03-01",
    )
    after = on(actions, "2025-09-01")
    assert (after.status, after.rate_percent) == ("restricted", 30)
    assert after.conditions == ("steel only",)


def test_a_fee_of_zero_inside_a_pause_removes_the_rate_that_comes_back():
    actions = [
        act("f1", "fee", "2025-01-01", rate=20),
        act("p", "pause", "2025-03-01"),
        act("f0", "fee", "2025-05-01", rate=0),
        act("u", "resume", "2025-07-01"),
    ]
    state = on(actions, "2025-08-01")
    assert (state.status, state.rate_percent, state.since) == ("in_force", None, "2025-07-01")


def test_a_pause_inside_a_pause_replaces_until():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("p1", "pause", "2025-03-01", until="2025-06-01"),
        act("p2", "pause", "2025-04-01", until="2025-09-01"),
    ]
    state = on(actions, "2025-07-01")
    assert (state.status, state.until, state.since) == ("paused", "2025-09-01", "2025-03-01")
    assert on(actions, "2025-09-01").status == "restricted"
    assert on(actions, "2025-09-01").since == "2025-09-01"


def test_a_pause_inside_a_pause_can_shorten_it():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("p1", "pause", "2025-03-01", until="2025-12-01"),
        act("p2", "pause", "2025-04-01", until="2025-05-01"),
    ]
    assert on(actions, "2025-05-01").status == "restricted"
    assert on(actions, "2025-11-01").status == "restricted"


def test_a_pause_without_until_inside_a_pause_with_one_makes_it_open_ended():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("p1", "pause", "2025-03-01", until="2025-06-01"),
        act("p2", "pause", "2025-04-01"),
    ]
    state = on(actions, "2025-07-01")
    assert (state.status, state.until) == ("paused", None)


def test_a_second_pause_keeps_what_the_first_one_suspended():
    actions = [
        act("f", "fee", "2025-01-01", rate=20),
        act("p1", "pause", "2025-03-01"),
        act("p2", "pause", "2025-04-01", until="2025-05-01"),
    ]
    state = on(actions, "2025-05-02")
    assert (state.status, state.rate_percent) == ("in_force", 20)


def test_a_pause_that_ended_on_its_until_can_be_followed_by_another():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("p1", "pause", "2025-02-01", until="2025-03-01"),
        act("p2", "pause", "2025-04-01", until="2025-05-01"),
    ]
    assert on(actions, "2025-03-15").status == "restricted"
    assert on(actions, "2025-04-15").status == "paused"
    assert on(actions, "2025-04-15").since == "2025-04-01"
    assert on(actions, "2025-05-01").status == "restricted"


def test_an_action_on_the_until_day_applies_after_the_pause_ended():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("p", "pause", "2025-02-01", until="2025-03-01"),
        act("e", "ease", "2025-03-01"),
    ]
    state = on(actions, "2025-03-01")
    assert (state.status, state.since) == ("eased", "2025-03-01")


def test_a_pause_until_day_given_to_the_month_ends_on_the_first_of_the_month():
    actions = [act("b", "ban", "2025-01-01"), act("p", "pause", "2025-06-15", until="2025-09")]
    assert on(actions, "2025-08-31").status == "paused"
    state = on(actions, "2025-09-01")
    assert (state.status, state.since) == ("banned", "2025-09")


# Imprecise dates: certain and uncertain_because ------------------------------------------


def test_a_day_inside_an_imprecise_effective_period_is_uncertain():
    actions = [act("f", "fee", "2025-10", rate=10)]
    assert on(actions, "2025-09-30") == State()
    for day in ("2025-10-01", "2025-10-15", "2025-10-31"):
        state = on(actions, day)
        assert (state.status, state.since) == ("in_force", "2025-10")
        assert not state.certain
        assert state.uncertain_because == ("f",)
    after = on(actions, "2025-11-01")
    assert after.certain and after.uncertain_because == ()
    assert after.since == "2025-10"  # since keeps the action's own precision


def test_a_year_is_uncertain_all_year_long():
    actions = [act("r", "restrict", "2022")]
    assert not on(actions, "2022-01-01").certain
    assert not on(actions, "2022-12-31").certain
    assert on(actions, "2023-01-01").certain
    assert on(actions, "2023-01-01").since == "2022"


def test_precise_days_never_make_an_answer_uncertain():
    actions = [act("r", "restrict", "2025-12-08"),
               act("p", "pause", "2025-12-09", until="2025-12-10")]
    for day in ("2025-12-08", "2025-12-09", "2025-12-10"):
        assert on(actions, day).certain


def test_every_applied_action_whose_period_holds_the_day_is_named():
    actions = [
        act("f20", "fee", "2025", rate=20),
        act("f10", "fee", "2025-10", rate=10),
        act("e", "ease", "2025-10-20"),
    ]
    state = on(actions, "2025-10-25")
    assert state.uncertain_because == ("f20", "f10")
    assert on(actions, "2025-12-09").uncertain_because == ("f20",)


def test_an_action_whose_period_starts_after_the_day_is_neither_applied_nor_uncertain():
    actions = [act("r", "restrict", "2025-12-01"), act("e", "ease", "2025-12")]
    # 2025-12 starts on 1 December: it applies on that day, after the restrict (record order).
    state = on(actions, "2025-11-30")
    assert state == State()


def test_an_imprecise_until_makes_the_days_of_its_period_uncertain():
    actions = [
        act("r", "restrict", "2025-01-01"),
        act("p", "pause", "2025-11-10", until="2026"),
    ]
    assert on(actions, "2025-12-31").certain
    assert on(actions, "2025-12-31").until == "2026"
    for day in ("2026-01-01", "2026-07-01", "2026-12-31"):
        state = on(actions, day)
        assert (state.status, state.since, state.until) == ("restricted", "2026", None)
        assert not state.certain
        assert state.uncertain_because == ("p",)
    assert on(actions, "2027-01-01").certain


def test_an_action_uncertain_twice_is_named_once():
    actions = [act("b", "ban", "2025-01"), act("p", "pause", "2025-01", until="2025-02")]
    # Both start on 1 January: the ban first (record order), then the pause.
    state = on(actions, "2025-01-20")
    assert state.status == "paused"
    assert state.uncertain_because == ("b", "p")
    ended = on(actions, "2025-02-10")
    assert ended.status == "banned"
    assert ended.uncertain_because == ("p",)


def test_the_seed_rare_earth_pause_reads_as_the_article_says():
    actions = [
        act("restrict-2025", "restrict", "2025"),
        act("pause-2025", "pause", "2025", until="2026"),
    ]
    state = on(actions, "2025-12-09")
    assert (state.status, state.until) == ("paused", "2026")
    assert state.uncertain_because == ("restrict-2025", "pause-2025")


# Order: effective date, then record order -------------------------------------------------


def test_ties_on_the_same_start_day_go_by_record_order():
    ease = act("e", "ease", "2025-12-08", order=2, conditions=["approved customers"])
    restrict = act("r", "restrict", "2025-12-08", order=1)
    state = on([ease, restrict], "2025-12-09")
    assert state.status == "eased"
    assert state.based_on == ("r", "e")
    swapped = on([
        act("e", "ease", "2025-12-08", order=1, conditions=["approved customers"]),
        act("r", "restrict", "2025-12-08", order=2),
    ], "2025-12-09")
    assert swapped.status == "restricted"
    assert swapped.based_on == ("e", "r")


def test_a_month_and_its_first_day_tie_and_go_by_record_order():
    first = on([act("m", "ban", "2025-12", order=1), act("d", "ease", "2025-12-01", order=2)],
               "2025-12-05")
    assert (first.status, first.since, first.based_on) == ("eased", "2025-12-01", ("m", "d"))
    second = on([act("d", "ease", "2025-12-01", order=1), act("m", "ban", "2025-12", order=2)],
                "2025-12-05")
    assert (second.status, second.since, second.based_on) == ("banned", "2025-12", ("d", "m"))
    assert not first.certain and not second.certain


def test_a_year_and_its_first_day_tie_too():
    state = on([act("y", "fee", "2025", rate=20, order=2),
                act("d", "fee", "2025-01-01", rate=10, order=1)], "2025-06-01")
    assert state.rate_percent == 20
    assert state.based_on == ("d", "y")


def test_record_order_is_not_effective_order():
    # The later action in the world was recorded first; history filled in afterwards.
    recorded_late = act("r", "restrict", "2022", order=5)
    recorded_early = act("e", "ease", "2025-12-08", order=1)
    state = on([recorded_early, recorded_late], "2025-12-09")
    assert state.status == "eased"
    assert state.based_on == ("r", "e")
    assert on([recorded_early, recorded_late], "2023-01-01").status == "restricted"


def test_the_order_actions_are_passed_in_does_not_matter():
    actions = [
        act("f", "fee", "2025", rate=20),
        act("r", "restrict", "2025-03-01"),
        act("p", "pause", "2025-04-01", until="2025-08"),
        act("f2", "fee", "2025-05-01", rate=10),
        act("e", "ease", "2025-09-15"),
    ]
    expected = [on(actions, d) for d in ("2025-03-15", "2025-06-01", "2025-08-10", "2025-10-01")]
    for permutation in itertools.permutations(actions):
        got = [on(list(permutation), d) for d in ("2025-03-15", "2025-06-01", "2025-08-10",
                                                  "2025-10-01")]
        assert got == expected


# based_on and since ---------------------------------------------------------------------


def test_based_on_lists_every_applied_action_in_effective_order():
    actions = [
        act("e", "ease", "2025-12-08", order=3),
        act("r", "restrict", "2022", order=1),
        act("f", "fee", "2025-12-08", rate=25, order=4),
        act("x", "ban", "2026-01-01", order=2),
    ]
    assert on(actions, "2025-12-09").based_on == ("r", "e", "f")
    assert on(actions, "2026-01-02").based_on == ("r", "e", "f", "x")


def test_since_is_the_action_that_set_the_current_status():
    actions = [
        act("p", "propose", "2025-06"),
        act("f", "fee", "2025-07-04", rate=10),
        act("f2", "fee", "2025-09-01", rate=12),
        act("r", "restrict", "2025-10"),
    ]
    assert on(actions, "2025-06-20").since == "2025-06"
    assert on(actions, "2025-08-01").since == "2025-07-04"
    assert on(actions, "2025-09-02").since == "2025-07-04"
    assert on(actions, "2025-11-01").since == "2025-10"


# Whole histories as stretches of valid time -----------------------------------------------


def test_segments_cover_all_time_and_agree_with_state_on():
    actions = [
        act("r", "restrict", "2022"),
        act("p", "pause", "2025-03", until="2025-09-15"),
        act("f", "fee", "2025-05-01", rate=10),
        act("e", "ease", "2025-12-08"),
    ]
    parts = segments(actions)
    assert parts[0].valid_from == date.min
    assert parts[-1].valid_to == date.max
    for left, right in zip(parts, parts[1:]):
        assert left.valid_to == right.valid_from
        assert left.state != right.state  # equal neighbours are merged
    for part in parts:
        assert state_on(actions, part.valid_from) == part.state
        if part.valid_to != date.max:
            last_day = date.fromordinal(part.valid_to.toordinal() - 1)
            assert state_on(actions, last_day) == part.state


def test_segments_handle_the_first_and_last_years():
    actions = [act("b", "ban", "0001"), act("l", "lift", "9999")]
    parts = segments(actions)
    assert all(part.state == state_on(actions, part.valid_from) for part in parts)
    assert state_on(actions, date(1, 1, 1)).status == "banned"
    assert parts[0].state.status == "banned"
    assert state_on(actions, date.max).status == "lifted"
