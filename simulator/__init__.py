"""A seeded, reproducible live-shopping marketplace: the data every evaluation, benchmark and demo uses.

Public API (everything else in the package is internal)::

    from simulator import Marketplace, SimConfig

    market = Marketplace(seed=7, n_merchants=5_000, n_viewers=100_000, days=7)
    # or one of the world family (simulator.presets: loyal, live_buzz, category, latent, grid, newcomers)
    market = Marketplace(config=world_config("loyal", seed=1))
    market.merchants            # list[Merchant]: merchant_id, category, tags, price_band, format,
                                #   host, quality (ground truth), followers (private-domain size)
    market.rooms                # list[SimRoom]: .features (ranking.features.RoomFeatures),
                                #   .live_from_ms, .live_until_ms (minute-aligned broadcast)
    market.live_rooms(ts_ms)    # rooms live at ts_ms
    market.events()             # iterator of event dicts in the ingest schema, time order
    market.sessions()           # iterator of SimSession(session_id, viewer_id, started_ms,
                                #   intent_category, entry_code_merchant_id) - the ground truth
    market.log                  # the same events as numpy columns (EventLog), for fast readers
    market.true_match(viewer_id, room_features)   # ground-truth taste match (z-scored)

    # Drive one viewer against rooms chosen elsewhere (the real feed: the demo, the world A/B):
    viewer = market.viewer("v42", session_id="demo-1", start_ms=ts, seed=1,
                           entry_code_merchant_id=None, intent_category=None, day=None)
    events = viewer.react(room_features)    # swipe: impression, enter, … leave (a skip: a short stay)
    events = viewer.browse(page_of_rooms)   # grid: impressions of the page, maybe one room entered
    viewer.done                             # the viewer closed the app
    viewer.now_ms                           # the viewer's clock after the last reaction

Ids: merchants `m<i>`, viewers `v<i>`, rooms `r<j>`, sessions `s<k>`. Every parameter is a field
of `SimConfig`; values and their sources are in docs/simulator.md. `simulator.measure` says
what a world looks like (watches, repeat share, concentration, exposure bias). Same seed and config, same
events, byte for byte.
"""

from simulator.engine import EventLog
from simulator.market import Marketplace, SimSession, SimulatedViewer
from simulator.presets import WORLDS, WorldPreset, world_config
from simulator.world import CATEGORIES, Merchant, SimConfig, SimRoom

__all__ = [
    "WORLDS",
    "WorldPreset",
    "world_config",
    "CATEGORIES",
    "EventLog",
    "Marketplace",
    "Merchant",
    "SimConfig",
    "SimRoom",
    "SimSession",
    "SimulatedViewer",
]
