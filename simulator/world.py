"""The simulated marketplace's fixed world: merchants, their broadcast schedule and the viewers.

Owns `SimConfig` (every behavioural parameter, documented in docs/simulator.md), the latent
taste space, merchant attributes (category, tags, price band, format, host, quality,
private-domain followers), the minute-resolution schedule of rooms, and viewers (tastes, budgets,
activity, favourite merchants, private-domain memberships). Nothing here draws sessions; see
`simulator.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from ranking.features import PRICE_BANDS, RoomFeatures

CATEGORIES: tuple[str, ...] = (
    "apparel",
    "beauty",
    "food",
    "home",
    "electronics",
    "jewelry",
    "mother_baby",
    "sports",
    "books",
    "pets",
    "health",
    "agriculture",
)
# Share of merchants per category, roughly the order of Douyin/Taobao Live GMV categories.
CATEGORY_SHARE = np.array([0.20, 0.15, 0.14, 0.10, 0.08, 0.06, 0.06, 0.06, 0.04, 0.04, 0.04, 0.03])
TAGS_PER_CATEGORY = 6
INTERFACES: tuple[str, ...] = ("swipe", "grid", "silent_skip")
MINUTE_MS = 60_000
BUZZ_WIDTH_MS = 20 * 60_000
DAY_MS = 86_400_000
# Day 0 starts at local (UTC+8) midnight.
DEFAULT_START_MS = int(datetime(2026, 11, 1, 16, 0, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulator. Values and their reasons: docs/simulator.md."""

    seed: int = 7
    n_merchants: int = 5_000
    n_viewers: int = 100_000
    days: int = 7
    start_ms: int = DEFAULT_START_MS
    dim: int = 16
    # Interface: "swipe" (every served room starts playing; a skip is a short stay), "grid" (a page
    # of cards; the viewer enters one or none) or "silent_skip" (the first simulator's: a room not
    # entered leaves only its impression; kept so figures made before the world family reproduce).
    interface: str = "silent_skip"
    skip_dwell_median_s: float = 1.4  # swipe: how long a skipped room plays before the next swipe
    skip_dwell_sigma: float = 0.45
    grid_size: int = 6  # grid: cards per page
    grid_none_bias: float = 0.5  # grid: utility of entering none of the page (scroll on)
    grid_position_decay: float = 0.25  # grid: lower cards are looked at less (logit per row)
    # World
    merchant_noise: float = 0.6  # latent part of a merchant not explained by its features
    viewer_noise: float = 0.5
    category_strength: float = 1.0  # length of the category directions in taste space
    quality_sd: float = 0.8  # spread of merchants' lasting appeal (long-term popularity)
    reach_sigma: float = 1.0  # spread of merchants' audience reach (log-normal)
    # Per-day random-walk step of each merchant's lasting appeal (0: appeal is fixed for the horizon). With
    # drift, appeal on day d is day 0's plus d steps, and the logging feed's popularity is recomputed each
    # night from the day before's appeal (the `drifting` world).
    quality_drift_sd: float = 0.0
    new_merchant_share: float = 0.0  # merchants whose first broadcast falls inside the horizon
    new_merchant_days: int = 2  # ... on one of its last this many days (the test day included)
    buzz_sigma: float = 0.0  # per-broadcast "buzz" (a guest, a flash sale): live popularity
    buzz_peak: float = 0.0  # height of a broadcast's one peak of buzz (~20 min wide)
    one_to_one_share: float = 0.10
    n_hosts: int = 400  # host agencies (MCNs) shared by several merchants
    live_day_prob: tuple[float, float] = (0.3, 0.95)
    second_broadcast_prob: float = 0.2
    duration_min: tuple[int, int] = (60, 300)
    pd_member_share: float = 0.30  # viewers in at least one merchant's private domain
    prior_favourites: float = 3.0  # mean favourite merchants from before the log starts
    # Activity
    sessions_per_viewer_day: float = 0.16
    activity_sigma: float = 1.8
    dormant_share: float = 0.5  # registered viewers who do not open the app this week
    notify_share: float = 0.45  # sessions opened by a favourite's "now live" notification
    # Sessions
    continue_prob: float = 0.9  # per-step chance the viewer keeps swiping (mean ~10 steps)
    continue_after_skip: float = -1.0  # after a skipped room (-1: the same as continue_prob)
    follow_tab_prob: float = 0.5  # step goes to a live favourite (following tab)
    code_entry_prob: float = 0.35  # session opens through a private-domain merchant's code
    feed_explore: float = 0.15  # the logging feed's uniform exploration share
    feed_pop_weight: float = 1.0
    feed_category_bonus: float = 0.7
    feed_follow_bonus: float = 1.0  # the logging feed also boosted merchants the viewer follows
    feed_buzz_weight: float = 0.0  # the logging feed also pushed rooms with buzz now
    enter_bias: float = -2.0
    w_buzz: float = 1.0
    w_match: float = 1.0
    w_quality: float = 0.5
    w_intent: float = 0.9
    w_band: float = 0.4
    w_familiar: float = 1.0
    follow_tab_bonus: float = 1.5
    dwell_median_s: float = 25.0
    dwell_sigma: float = 0.9
    heartbeat_s: int = 120
    purchase_given_cart: float = 0.4
    follow_bias: float = -4.5
    follow_gain: float = 1.0  # affinity a follow adds
    favourite_slots: int = 10
    favourite_daily_decay: float = 0.9

    def __post_init__(self) -> None:
        if self.interface not in INTERFACES:
            raise ValueError(f"interface {self.interface!r}: one of {', '.join(INTERFACES)}")
        if not 0.0 <= self.new_merchant_share < 1.0:
            raise ValueError("new_merchant_share must be in [0, 1)")
        if self.quality_drift_sd < 0:
            raise ValueError("quality_drift_sd must be >= 0")

    @property
    def skip_continue(self) -> float:
        return self.continue_prob if self.continue_after_skip < 0 else self.continue_after_skip


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    category: str
    tags: list[str]
    price_band: str
    format: str
    host: str
    quality: float
    followers: int


@dataclass(frozen=True)
class SimRoom:
    """One broadcast: the features the rooms domain would publish plus its live interval."""

    features: RoomFeatures
    live_from_ms: int
    live_until_ms: int

    @property
    def room_id(self) -> str:
        return self.features.room_id

    @property
    def merchant_id(self) -> str:
        return self.features.merchant_id


@dataclass
class World:
    """Arrays behind the marketplace (index-based; ids are `m{i}`, `v{i}`, `r{i}`)."""

    config: SimConfig
    cat_vecs: np.ndarray
    tag_vecs: np.ndarray
    band_vecs: np.ndarray
    host_vecs: np.ndarray
    m_cat: np.ndarray
    m_tags: np.ndarray  # (n_merchants, 2) global tag indices
    m_band: np.ndarray
    m_format: np.ndarray
    m_host: np.ndarray
    m_quality: np.ndarray
    m_latent: np.ndarray
    m_hotness: np.ndarray  # what the logging feed knew as popularity
    m_followers: np.ndarray
    m_debut: np.ndarray  # first day the merchant may broadcast (0 for merchants from before the log)
    r_merchant: np.ndarray
    r_start: np.ndarray
    r_end: np.ndarray
    r_buzz: np.ndarray  # per-broadcast buzz level
    r_peak: np.ndarray  # when its buzz peaks (epoch ms)
    v_taste: np.ndarray
    v_band: np.ndarray
    v_topcat: np.ndarray
    v_catw: np.ndarray  # (n_viewers, n_categories) category preference (session intents)
    v_activity: np.ndarray
    v_pd: np.ndarray  # (n_viewers, 2) private-domain merchants, -1 if none
    fav_m: np.ndarray  # (n_viewers, slots) favourite merchants, -1 empty
    fav_a: np.ndarray  # (n_viewers, slots) affinity
    match_scale: float = 1.0
    rooms_cache: list[SimRoom] = field(default_factory=list)
    # Favourites (merchants, affinities) as they stood at the start of each day of the run.
    fav_at_day: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # (days, n_merchants) appeal and the logging feed's popularity per day where appeal drifts
    # (SimConfig.quality_drift_sd); None: m_quality and m_hotness hold for every day.
    m_quality_day: np.ndarray | None = None
    m_hotness_day: np.ndarray | None = None


def _gumbel_topk(rng: np.random.Generator, logits: np.ndarray, k: int) -> np.ndarray:
    u = rng.random(size=logits.shape, dtype=np.float32)
    g = logits - np.log(-np.log(np.maximum(u, 1e-12)))
    return np.argpartition(-g, kth=min(k, logits.shape[1] - 1), axis=1)[:, :k]


def build_world(config: SimConfig) -> World:
    ss = np.random.SeedSequence(config.seed)
    rng_m, rng_s, rng_v, rng_f = (np.random.default_rng(s) for s in ss.spawn(4))
    c = config
    n_cat = len(CATEGORIES)
    d = c.dim
    cat_vecs = rng_m.normal(0, c.category_strength, (n_cat, d))
    tag_vecs = rng_m.normal(0, 0.6, (n_cat * TAGS_PER_CATEGORY, d))
    band_vecs = rng_m.normal(0, 0.5, (len(PRICE_BANDS), d))
    host_vecs = rng_m.normal(0, 0.4, (c.n_hosts, d))

    nm = c.n_merchants
    m_cat = rng_m.choice(n_cat, size=nm, p=CATEGORY_SHARE / CATEGORY_SHARE.sum())
    local_tags = np.stack([rng_m.choice(TAGS_PER_CATEGORY, 2, replace=False) for _ in range(nm)])
    m_tags = m_cat[:, None] * TAGS_PER_CATEGORY + local_tags
    m_band = rng_m.choice(len(PRICE_BANDS), size=nm, p=[0.35, 0.35, 0.2, 0.1])
    m_format = (rng_m.random(nm) < c.one_to_one_share).astype(np.int8)
    m_host = rng_m.zipf(1.6, size=nm) % c.n_hosts
    host_quality = rng_m.normal(0, 0.5, c.n_hosts)
    m_quality = c.quality_sd * rng_m.normal(0, 1, nm) + host_quality[m_host]
    m_latent = (
        cat_vecs[m_cat]
        + tag_vecs[m_tags].mean(axis=1) * 0.8
        + band_vecs[m_band] * 0.5
        + host_vecs[m_host] * 0.5
        + rng_m.normal(0, c.merchant_noise, (nm, d))
    ).astype(np.float32)
    reach = rng_m.lognormal(0, c.reach_sigma, nm) * np.exp(0.3 * m_quality)
    # Merchants new to the platform during the horizon (drawn from their own stream so worlds
    # without them keep the schedule they always had).
    rng_n = np.random.default_rng(np.random.SeedSequence([c.seed, 11]))
    m_debut = np.zeros(nm, dtype=np.int64)
    if c.new_merchant_share > 0 and c.days > 1:
        new = rng_n.random(nm) < c.new_merchant_share
        m_debut[new] = rng_n.integers(max(1, c.days - c.new_merchant_days), c.days, int(new.sum()))

    # Schedule: each merchant has a habitual slot and duration (live rooms keep regular hours).
    slot_centres = np.array([10 * 60, 14 * 60 + 30, 19 * 60 + 30])
    slot = rng_s.choice(3, size=nm, p=[0.15, 0.25, 0.6])
    habit_start = slot_centres[slot] + rng_s.normal(0, 75, nm)
    habit_dur = rng_s.uniform(*c.duration_min, nm)
    p_day = rng_s.uniform(*c.live_day_prob, nm)
    rm, rs, re = [], [], []
    for day in range(c.days):
        live = (rng_s.random(nm) < p_day) & (m_debut <= day)
        idx = np.flatnonzero(live)
        for extra in (False, True):
            if extra:
                idx = idx[rng_s.random(idx.size) < c.second_broadcast_prob]
                start = slot_centres[(slot[idx] + 1) % 3] + rng_s.normal(0, 60, idx.size)
            else:
                start = habit_start[idx] + rng_s.normal(0, 20, idx.size)
            dur = habit_dur[idx] * rng_s.uniform(0.8, 1.2, idx.size)
            start = np.clip(np.round(start), 0, 1439 - 30).astype(np.int64)
            dur = np.round(dur).astype(np.int64)
            rm.append(idx)
            rs.append(c.start_ms + day * DAY_MS + start * MINUTE_MS)
            re.append(c.start_ms + day * DAY_MS + (start + dur) * MINUTE_MS)
    r_merchant = np.concatenate(rm)
    r_start = np.concatenate(rs)
    r_end = np.concatenate(re)
    order = np.lexsort((r_merchant, r_start))
    r_merchant, r_start, r_end = r_merchant[order], r_start[order], r_end[order]
    # A merchant's two broadcasts on one day never overlap: clip the earlier one.
    by_m = np.lexsort((r_start, r_merchant))
    same = r_merchant[by_m][1:] == r_merchant[by_m][:-1]
    nxt_start = r_start[by_m][1:]
    cur = by_m[:-1][same]
    r_end[cur] = np.minimum(r_end[cur], nxt_start[same] - MINUTE_MS)
    keep = r_end - r_start >= 15 * MINUTE_MS
    r_merchant, r_start, r_end = r_merchant[keep], r_start[keep], r_end[keep]
    n_rooms = r_merchant.shape[0]
    r_buzz = np.asarray(rng_n.normal(0.0, 1.0, n_rooms) * c.buzz_sigma, dtype=np.float32)
    r_peak = r_start + (rng_n.random(n_rooms) * (r_end - r_start)).astype(np.int64)

    # Viewers: tastes are mixtures of 1-3 category directions plus personal noise.
    nv = c.n_viewers
    n_pref = rng_v.choice([1, 2, 3], size=nv, p=[0.4, 0.4, 0.2])
    v_catw = np.zeros((nv, n_cat), dtype=np.float32)
    for k in range(3):
        pick = rng_v.choice(n_cat, size=nv, p=CATEGORY_SHARE / CATEGORY_SHARE.sum())
        w = rng_v.uniform(0.5, 1.0, nv) * (k < n_pref)
        np.add.at(v_catw, (np.arange(nv), pick), w)
    v_catw /= v_catw.sum(axis=1, keepdims=True)
    v_taste = (v_catw @ cat_vecs + rng_v.normal(0, c.viewer_noise, (nv, d))).astype(np.float32)
    v_band = rng_v.choice(len(PRICE_BANDS), size=nv, p=[0.4, 0.35, 0.18, 0.07])
    v_topcat = v_catw.argmax(axis=1)
    v_activity = rng_v.lognormal(-0.5 * c.activity_sigma**2, c.activity_sigma, nv) * c.sessions_per_viewer_day
    v_activity *= (rng_v.random(nv) >= c.dormant_share) / (1.0 - c.dormant_share)

    sample = rng_v.integers(0, nv, 2000)
    match_scale = float(np.std(v_taste[sample] @ m_latent.T))

    # Private-domain members and prior favourites, sampled per chunk with Gumbel top-k.
    v_pd = np.full((nv, 2), -1, dtype=np.int64)
    fav_m = np.full((nv, c.favourite_slots), -1, dtype=np.int64)
    fav_a = np.zeros((nv, c.favourite_slots), dtype=np.float32)
    log_reach = np.log(reach).astype(np.float32)
    appeal = (0.5 * m_quality + 0.3 * log_reach).astype(np.float32)
    # Nobody followed or favoured a merchant before it joined.
    unknown = np.where(m_debut > 0, -np.inf, 0.0).astype(np.float32)
    chunk = 4000
    for lo in range(0, nv, chunk):
        hi = min(nv, lo + chunk)
        match = (v_taste[lo:hi] @ m_latent.T) / np.float32(match_scale)
        pd_pick = _gumbel_topk(rng_f, match + 1.5 * log_reach + unknown, 2)
        n_pd = np.where(
            rng_f.random(hi - lo) < c.pd_member_share, rng_f.choice([1, 2], hi - lo, p=[0.7, 0.3]), 0
        )
        v_pd[lo:hi] = np.where(np.arange(2)[None, :] < n_pd[:, None], pd_pick, -1)
        fav_pick = _gumbel_topk(rng_f, 1.2 * match + appeal + unknown, c.favourite_slots)
        n_fav = np.minimum(rng_f.poisson(c.prior_favourites, hi - lo), c.favourite_slots - 2)
        has = np.arange(c.favourite_slots)[None, :] < n_fav[:, None]
        fav_m[lo:hi] = np.where(has, fav_pick, -1)
        fav_a[lo:hi] = np.where(has, rng_f.exponential(1.0, fav_pick.shape), 0.0)
    # Private-domain merchants are favourites too (that is why viewers follow them off-platform).
    for k in range(2):
        has = v_pd[:, k] >= 0
        fav_m[has, c.favourite_slots - 1 - k] = v_pd[has, k]
        fav_a[has, c.favourite_slots - 1 - k] = 1.5
    followers = np.bincount(v_pd[v_pd >= 0], minlength=nm)
    m_hotness = _hotness(followers, reach, m_quality, m_debut)
    # Drifting appeal (its own stream: worlds without drift keep every draw they always had). Day 0 is the
    # appeal above; each later day adds a normal step. The logging feed's popularity on day d is recomputed
    # from day d-1's appeal (a nightly job), so it lags the drift by a day.
    q_day = h_day = None
    if c.quality_drift_sd > 0 and c.days > 1:
        rng_d = np.random.default_rng(np.random.SeedSequence([c.seed, 13]))
        steps = rng_d.normal(0.0, c.quality_drift_sd, (c.days - 1, nm))
        q_day = (m_quality[None, :] + np.vstack([np.zeros((1, nm)), np.cumsum(steps, axis=0)])).astype(
            np.float32
        )
        h_day = np.stack(
            [m_hotness] + [_hotness(followers, reach, q_day[d - 1], m_debut) for d in range(1, c.days)]
        )

    return World(
        config=c,
        cat_vecs=cat_vecs,
        tag_vecs=tag_vecs,
        band_vecs=band_vecs,
        host_vecs=host_vecs,
        m_cat=m_cat,
        m_tags=m_tags,
        m_band=m_band,
        m_format=m_format,
        m_host=m_host,
        m_quality=m_quality.astype(np.float32),
        m_latent=m_latent,
        m_hotness=m_hotness,
        m_followers=followers,
        m_debut=m_debut,
        r_merchant=r_merchant,
        r_start=r_start,
        r_end=r_end,
        r_buzz=r_buzz,
        r_peak=r_peak,
        v_taste=v_taste,
        v_band=v_band,
        v_topcat=v_topcat,
        v_catw=v_catw,
        v_activity=v_activity,
        v_pd=v_pd,
        fav_m=fav_m,
        fav_a=fav_a,
        match_scale=match_scale,
        m_quality_day=q_day,
        m_hotness_day=h_day,
    )


def _hotness(followers: np.ndarray, reach: np.ndarray, quality: np.ndarray, debut: np.ndarray) -> np.ndarray:
    """What the logging feed knows as a merchant's popularity (standardised)."""
    hot = (0.6 * np.log1p(followers * 20 + reach * 50) + 0.6 * quality).astype(np.float32)
    hot = (hot - hot.mean()) / (hot.std() + 1e-9)
    # The logging feed knows nothing good of a newcomer yet: it ranks it with the least popular tenth.
    if (debut > 0).any():
        hot[debut > 0] = np.quantile(hot[debut == 0], 0.1)
    out: np.ndarray = hot
    return out


def _on_day(per_day: np.ndarray | None, fixed: np.ndarray, day: int) -> np.ndarray:
    if per_day is None:
        return fixed
    out: np.ndarray = per_day[min(max(day, 0), per_day.shape[0] - 1)]
    return out


def quality_on(world: World, day: int) -> np.ndarray:
    """Every merchant's lasting appeal on `day` of the horizon (fixed unless the world drifts; a day past
    the horizon keeps its last day's)."""
    return _on_day(world.m_quality_day, world.m_quality, day)


def hotness_on(world: World, day: int) -> np.ndarray:
    """The logging feed's popularity of every merchant on `day` (fixed unless the world drifts)."""
    return _on_day(world.m_hotness_day, world.m_hotness, day)


def room_buzz(world: World, rooms: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
    """Each room's buzz at `ts_ms` (broadcast level plus its one peak); zeros in a world without buzz."""
    c = world.config
    if c.buzz_sigma == 0 and c.buzz_peak == 0:
        return np.zeros(np.broadcast(rooms, ts_ms).shape, dtype=np.float32)
    z = (ts_ms - world.r_peak[rooms]) / BUZZ_WIDTH_MS
    out: np.ndarray = (world.r_buzz[rooms] + c.buzz_peak * np.exp(-0.5 * z * z)).astype(np.float32)
    return out


def tag_name(tag_index: int) -> str:
    return f"{CATEGORIES[tag_index // TAGS_PER_CATEGORY]}/t{tag_index % TAGS_PER_CATEGORY}"


def merchant_of(world: World, i: int) -> Merchant:
    return Merchant(
        merchant_id=f"m{i}",
        category=CATEGORIES[int(world.m_cat[i])],
        tags=[tag_name(int(t)) for t in world.m_tags[i]],
        price_band=PRICE_BANDS[int(world.m_band[i])],
        format="one_to_one" if world.m_format[i] else "one_to_many",
        host=f"h{int(world.m_host[i])}",
        quality=float(world.m_quality[i]),
        followers=int(world.m_followers[i]),
    )


def room_of(world: World, j: int) -> SimRoom:
    m = merchant_of(world, int(world.r_merchant[j]))
    features = RoomFeatures(
        room_id=f"r{j}",
        merchant_id=m.merchant_id,
        category=m.category,
        tags=list(m.tags),
        price_band=m.price_band,
        format=m.format,
        host=m.host,
        started_at=float(world.r_start[j]) / 1000.0,
    )
    return SimRoom(features=features, live_from_ms=int(world.r_start[j]), live_until_ms=int(world.r_end[j]))
