"""The world family: named simulator presets a ranker has to win in, each of them.

Owns `WORLDS` (name → `WorldPreset`) and `world_config(name, seed, ...)`. A preset is a fixed set
of `SimConfig` overrides with what it models, the repeat-share band its measured test day falls
in (tests/simulator check it) and where its parameters come from. They were fixed and committed
before any ranker was measured on them (docs/simulator.md, "The world family"); changing one
means a new name, never a quiet edit.

The worlds differ in what a ranker has to get right: how much of watching is repeat viewing
(40 % to 80 %), whether lasting or live popularity predicts what is watched, how biased the
logging feed's exposure was, whether taste follows categories or hidden features, how many
merchants are new, whether viewers swipe (every served room plays) or pick from a grid, whether
price fit outweighs taste, how rarely and briefly merchants are live, and whether merchants' appeal
drifts over the days.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from simulator.world import SimConfig


@dataclass(frozen=True)
class WorldPreset:
    name: str
    models: str  # what it stands for, one line
    overrides: dict[str, object] = field(default_factory=dict)
    repeat_band: tuple[float, float] = (0.0, 1.0)  # measured test-day repeat share of watches lies here


# Sizes every world is run at by `roomfeed evaluate --world` (docs/simulator.md: why these).
N_VIEWERS = 30_000
N_MERCHANTS = 1_500
DAYS = 7

WORLDS: dict[str, WorldPreset] = {
    p.name: p
    for p in (
        WorldPreset(
            "loyal",
            "the independent evaluator's world: most watches are repeats, lasting merchant popularity "
            "matters, the logging feed put followed and popular merchants first (exposure bias)",
            {
                "interface": "swipe",
                "follow_tab_prob": 0.8,
                "notify_share": 0.75,
                "prior_favourites": 6.0,
                "enter_bias": -3.5,
                "w_familiar": 2.5,
                "favourite_daily_decay": 0.95,
                "sessions_per_viewer_day": 0.3,
                "activity_sigma": 2.2,
                "continue_prob": 0.93,
                "continue_after_skip": 0.7,
                "quality_sd": 1.2,
                "w_quality": 0.8,
                "reach_sigma": 1.4,
                "feed_pop_weight": 1.5,
                "feed_follow_bonus": 3.0,
                "feed_explore": 0.05,
                "follow_gain": 1.5,
            },
            (0.70, 0.86),
        ),
        WorldPreset(
            "live_buzz",
            "the real platform log's world: what is hot now (a guest, a flash sale) drives watching "
            "more than a merchant's lasting popularity; the logging feed pushed rooms with buzz",
            {
                "interface": "swipe",
                "buzz_sigma": 0.9,
                "buzz_peak": 1.6,
                "w_buzz": 1.0,
                "quality_sd": 0.5,
                "w_quality": 0.25,
                "feed_pop_weight": 0.4,
                "feed_buzz_weight": 1.2,
                "follow_tab_prob": 0.6,
                "notify_share": 0.55,
                "enter_bias": -3.0,
                "w_familiar": 1.5,
                "continue_prob": 0.92,
                "continue_after_skip": 0.8,
            },
            (0.38, 0.55),
        ),
        WorldPreset(
            "category",
            "taste follows categories (what the viewer came for today), most watching is discovery, "
            "favourites fade quickly; the logging feed explored a lot",
            {
                "interface": "swipe",
                "merchant_noise": 0.3,
                "viewer_noise": 0.3,
                "category_strength": 1.3,
                "w_intent": 1.5,
                "follow_tab_prob": 0.3,
                "notify_share": 0.3,
                "prior_favourites": 1.5,
                "favourite_daily_decay": 0.75,
                "feed_explore": 0.3,
                "w_familiar": 0.6,
                "continue_prob": 0.92,
                "continue_after_skip": 0.8,
            },
            (0.30, 0.50),
        ),
        WorldPreset(
            "latent",
            "taste is mostly hidden (not explained by category, tags or price band): what a viewer "
            "watched says more than what a merchant sells; categories barely separate viewers",
            {
                "interface": "swipe",
                "merchant_noise": 1.2,
                "viewer_noise": 1.0,
                "category_strength": 0.5,
                "w_intent": 0.3,
                "w_match": 1.5,
                "follow_tab_prob": 0.5,
                "notify_share": 0.5,
                "continue_prob": 0.92,
                "continue_after_skip": 0.8,
            },
            (0.40, 0.62),
        ),
        WorldPreset(
            "grid",
            "a grid of cards instead of a swipe: the viewer sees six rooms and enters one or none, "
            "so an impression not entered is a real choice against the others on the page",
            {
                "interface": "grid",
                "follow_tab_prob": 0.55,
                "notify_share": 0.55,
                "feed_pop_weight": 1.0,
                "continue_prob": 0.92,
                "continue_after_skip": 0.9,
            },
            (0.35, 0.55),
        ),
        WorldPreset(
            "newcomers",
            "a growing platform: a quarter of merchants join in the last two days (cold start), the "
            "logging feed knows nothing good of them yet, favourites matter moderately",
            {
                "interface": "swipe",
                "new_merchant_share": 0.25,
                "feed_explore": 0.2,
                "follow_tab_prob": 0.4,
                "notify_share": 0.4,
                "continue_prob": 0.92,
                "continue_after_skip": 0.8,
            },
            (0.35, 0.55),
        ),
        # Two worlds added on 2026-12-07 (worlds4) with every value below, the repeat bands included,
        # fixed and committed before either was simulated: nothing here was calibrated on a run.
        WorldPreset(
            "bargain",
            "price decides: whether a room's price band fits the viewer's budget explains more of "
            "staying than category or hidden taste; the logging feed did not know budgets",
            {
                "interface": "swipe",
                "w_band": 1.6,
                "category_strength": 0.5,
                "w_intent": 0.3,
                "w_match": 0.6,
                "continue_prob": 0.92,
                "continue_after_skip": 0.8,
            },
            (0.30, 0.60),
        ),
        WorldPreset(
            "fleeting",
            "merchants go live only in rare, short windows: a favourite is seldom live when the viewer "
            "comes, few rooms are live at once and the live set turns over quickly",
            {
                "interface": "swipe",
                "live_day_prob": (0.05, 0.4),
                "duration_min": (20, 75),
                "second_broadcast_prob": 0.05,
                "continue_prob": 0.92,
                "continue_after_skip": 0.8,
            },
            (0.15, 0.50),
        ),
        # Added on 2026-12-07 (worlds5) for issue 13's outside check, every value below (the repeat band
        # included) fixed and committed before the world was simulated once; no calibration pass.
        WorldPreset(
            "drifting",
            "merchants' appeal drifts over the week (a new host, a viral clip, a better supplier; others "
            "fade): counts from the first days mislead, and the logging feed's popularity, recomputed "
            "nightly, lags a day",
            {
                "interface": "swipe",
                "quality_drift_sd": 0.35,
                "w_quality": 0.8,
                "continue_prob": 0.92,
                "continue_after_skip": 0.8,
            },
            (0.30, 0.60),
        ),
    )
}


def world_config(
    name: str,
    seed: int = 1,
    n_viewers: int = N_VIEWERS,
    n_merchants: int = N_MERCHANTS,
    days: int = DAYS,
) -> SimConfig:
    """The `SimConfig` of world `name` (KeyError naming the worlds when unknown)."""
    if name not in WORLDS:
        raise KeyError(f"unknown world {name!r}: one of {', '.join(WORLDS)}")
    return dataclasses.replace(
        SimConfig(),
        seed=seed,
        n_viewers=n_viewers,
        n_merchants=n_merchants,
        days=days,
        **WORLDS[name].overrides,  # type: ignore[arg-type]
    )
