"""The world family: each preset is what docs/simulator.md says it is, and the interfaces behave as the app does."""

from __future__ import annotations

import numpy as np
import pytest

from events.vocabulary import (
    ADD_TO_CART,
    CODE,
    ENTER,
    FOLLOW,
    IMPRESSION,
    LEAVE,
    LIKE,
    PURCHASE,
    SWIPE_AWAY_MS,
)
from simulator import Marketplace
from simulator.engine import VIA_FEED
from simulator.measure import enter_dwell, watch_mask, world_figures
from simulator.presets import WORLDS, world_config
from simulator.world import DAY_MS

SMALL = {"n_viewers": 2_000, "n_merchants": 120, "days": 3}


def small(name: str, seed: int = 1) -> Marketplace:
    return Marketplace(config=world_config(name, seed, **SMALL))


def test_there_are_at_least_four_worlds_with_both_interfaces() -> None:
    assert len(WORLDS) >= 4
    interfaces = {p.overrides.get("interface") for p in WORLDS.values()}
    assert {"swipe", "grid"} <= interfaces
    for preset in WORLDS.values():
        lo, hi = preset.repeat_band
        assert 0.0 <= lo < hi <= 1.0 and preset.models


def test_unknown_world_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="loyal"):
        world_config("nowhere")


@pytest.mark.parametrize("name", list(WORLDS))
def test_each_world_is_deterministic_per_seed(name: str) -> None:
    a, b = small(name, 3), small(name, 3)
    assert len(a.log) == len(b.log) > 500
    assert np.array_equal(a.log.ts, b.log.ts) and np.array_equal(a.log.room, b.log.room)
    assert list(a.events())[:200] == list(b.events())[:200]
    assert not np.array_equal(small(name, 4).log.ts[:1000], a.log.ts[:1000])


def test_swipe_plays_every_served_room_and_a_skip_is_a_short_stay() -> None:
    market = small("latent")
    log = market.log
    impressions = int((log.type == CODE[IMPRESSION]).sum())
    enters = log.type == CODE[ENTER]
    # Every served room starts playing: one enter (and one leave) per impression, no silent skip.
    assert int(enters.sum()) == impressions == int((log.type == CODE[LEAVE]).sum())
    dwell = enter_dwell(log)[enters]
    assert (dwell >= 0).all()
    skips = dwell < SWIPE_AWAY_MS
    assert 0.2 < skips.mean() < 0.9
    assert np.median(dwell[skips]) < 2_000 and np.median(dwell[~skips]) > 10_000
    # Nothing but the stay itself happens in a skipped room.
    rows = np.flatnonzero(enters)
    skipped = {(int(log.session[i]), int(log.room[i])) for i in rows[skips]}
    for kind in (LIKE, ADD_TO_CART, PURCHASE, FOLLOW):
        for i in np.flatnonzero(log.type == CODE[kind]).tolist():
            assert (int(log.session[i]), int(log.room[i])) not in skipped


def test_the_simulated_viewer_swipes_as_the_app_does() -> None:
    market = small("latent")
    rooms = market.live_rooms(market.config.start_ms + DAY_MS + 20 * 3_600_000)[:30]
    viewer = market.viewer("v7", session_id="s-demo", start_ms=rooms[0].live_from_ms + 60_000, seed=2)
    kinds_per_room: list[list[str]] = []
    for room in rooms:
        if viewer.done:
            break
        events = viewer.react(room.features, room.live_until_ms)
        kinds = [str(e["type"]) for e in events]
        assert (kinds[0], kinds[1], kinds[-1]) == (IMPRESSION, ENTER, LEAVE)
        kinds_per_room.append(kinds)
    assert kinds_per_room


def test_grid_shows_pages_and_the_viewer_enters_at_most_one_card_per_page() -> None:
    market = small("grid")
    log = market.log
    feed = (log.type == CODE[IMPRESSION]) & (log.via == VIA_FEED)
    assert int(feed.sum()) > 3 * int((log.type == CODE[ENTER]).sum()) / 2
    # Impressions of one page share session and time; at most one enter follows each page.
    pages = np.unique(np.stack([log.session[feed], log.ts[feed]]), axis=1)
    assert pages.shape[1] < int(feed.sum())
    sizes = np.unique(np.stack([log.session[feed], log.ts[feed]]), axis=1, return_counts=True)[1]
    assert sizes.max() == market.config.grid_size
    viewer = market.viewer("v3", session_id="g", start_ms=market.config.start_ms + 20 * 3_600_000, seed=1)
    page = [r.features for r in market.live_rooms(viewer.now_ms)[:6]]
    events = viewer.browse(page)
    assert [e["type"] for e in events[:6]] == [IMPRESSION] * 6
    assert sum(e["type"] == ENTER for e in events) <= 1


def test_newcomers_join_during_the_week_and_nobody_followed_them_before() -> None:
    market = small("newcomers")
    assert len(market.log) > 0  # the run keeps each day's favourites
    w = market.world
    new = np.flatnonzero(w.m_debut > 0)
    assert new.size > 0.1 * market.config.n_merchants
    first_live = np.full(market.config.n_merchants, np.iinfo(np.int64).max)
    np.minimum.at(first_live, w.r_merchant, w.r_start)
    debut_ms = market.config.start_ms + w.m_debut[new] * DAY_MS
    assert (first_live[new] >= debut_ms).all()
    assert not np.isin(w.fav_at_day[0][0], new).any()
    assert not np.isin(w.v_pd, new).any()


def test_buzz_makes_live_popularity_move_within_a_broadcast() -> None:
    market = small("live_buzz")
    w = market.world
    from simulator.world import room_buzz

    j = np.arange(min(50, w.r_merchant.size))
    at_peak = room_buzz(w, j, w.r_peak[j])
    at_start = room_buzz(w, j, w.r_start[j])
    assert (at_peak >= at_start).all() and (at_peak - at_start).mean() > 0.5
    assert np.allclose(room_buzz(small("loyal").world, j, w.r_peak[j]), 0.0)


def test_watches_are_enters_that_are_not_swipe_aways() -> None:
    market = small("grid")
    figures = world_figures(market)
    watches = watch_mask(market.log)
    assert watches.sum() > 0 and 0.0 < figures["repeat_share"] < 1.0
    assert figures["top10_merchant_watch_share"] > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WORLDS))
def test_each_world_repeat_share_lies_in_its_documented_band(name: str) -> None:
    """At the size `roomfeed evaluate --world` runs (docs/simulator.md's figures)."""
    lo, hi = WORLDS[name].repeat_band
    share = world_figures(Marketplace(config=world_config(name, 1)))["repeat_share"]
    assert lo <= share <= hi, f"{name}: {share:.3f} outside [{lo}, {hi}]"


def test_a_world_log_is_read_by_the_dataset_builder_as_production_events_are() -> None:
    """Event dicts in the ingest schema (what the archive holds) and the columnar log agree."""
    from ranking.dataset import from_events, from_simulator

    market = small("grid")
    events = list(market.events())
    columnar, dicts = from_simulator(market), from_events(events)
    assert dicts.type.tolist() == columnar.type.tolist()
    assert [dicts.room_ids[r] for r in dicts.room[:500]] == [
        columnar.room_ids[r] for r in columnar.room[:500]
    ]
    assert np.array_equal(dicts.dwell_ms, columnar.dwell_ms)


def test_drifting_appeal_moves_day_by_day_and_the_logging_feed_lags_a_day() -> None:
    from simulator.world import build_world, hotness_on, quality_on

    world = build_world(world_config("drifting", 3, n_viewers=500, n_merchants=400, days=5))
    q = [quality_on(world, d) for d in range(5)]
    assert np.array_equal(q[0], world.m_quality)
    steps = np.diff(np.stack(q), axis=0)
    assert steps.std() == pytest.approx(0.35, rel=0.1)  # the preset's daily step
    # Appeal on the last day ranks merchants differently from the first, more than from the day before.
    first_last = np.corrcoef(q[0], q[4])[0, 1]
    assert first_last < np.corrcoef(q[3], q[4])[0, 1] and first_last < 0.9
    # The logging feed's popularity of day d is recomputed from day d-1's appeal; day 0 keeps its own.
    assert np.array_equal(hotness_on(world, 0), world.m_hotness)
    assert np.corrcoef(hotness_on(world, 4), q[3])[0, 1] > np.corrcoef(hotness_on(world, 4), q[4])[0, 1]
    assert np.array_equal(quality_on(world, 9), q[4])  # past the horizon: its last day


def test_a_world_without_drift_keeps_one_appeal_for_every_day() -> None:
    from simulator.world import build_world, hotness_on, quality_on

    world = build_world(world_config("loyal", 3, n_viewers=300, n_merchants=60, days=3))
    assert world.m_quality_day is None and world.m_hotness_day is None
    assert quality_on(world, 2) is world.m_quality and hotness_on(world, 2) is world.m_hotness
    with pytest.raises(ValueError, match="quality_drift_sd"):
        world_config("loyal", 1).__class__(quality_drift_sd=-0.1)
