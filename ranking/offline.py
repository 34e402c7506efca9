"""Fitting a model on a log and judging it on held-out time: what `roomfeed train` and the offline evaluation share.

Owns `fit_model` — LightFM and then the learned ranker on one platform's log, with a validation split
inside the training window for every choice: LightFM "a" is fit on the window minus its last
`ranker_days` (by default the fewest whole days that hold `ranker_lists` enters, at most half the log);
the ranker's training lists are the enters of those last days, scored with "a" (so LightFM's column is
out of sample, as it will be when serving); every choice of the ranker is made on the validation lists
(by default the lists of a fixed quarter of the viewers over the whole ranker window); LightFM is then
refit on the whole window — and `evaluate_model`,
which replays held-out time and judges the model against the simple baselines (ranking.evaluation).
Nothing here knows where the log came from (the archive, a simulator world, an outside log).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.dataset import ENTER, InteractionLog, WeightParams, build_training_set
from ranking.evaluation import Evaluation, Method, PageJudge, evaluate, lightfm_method, ranker_method
from ranking.features import RoomFeatures
from ranking.history import ViewerHistories
from ranking.model import ModelParams, RankingModel, train_model
from ranking.ranker import (
    KNOWN_OFFSET_RULES,
    LIGHTFM_FEATURES,
    NEW_LINE_RULES,
    RATE_COLUMNS,
    Lists,
    Ranker,
    blend_rankers,
    choose_lightfm,
    design,
    fit_ranker,
    lists_of,
    repeat_band,
    with_known_offsets,
    with_new_line,
)
from ranking.replay import Schedule, Target, build_merchant_table, category_vocabulary, replay
from ranking.scorer import Scorer

logger = logging.getLogger("roomfeed.ranking.offline")

DAY_MS = 86_400_000


@dataclass(frozen=True)
class FitConfig:
    model: ModelParams = field(default_factory=ModelParams)
    weights: WeightParams = field(default_factory=WeightParams)
    # The last days of the window give the ranker's lists. None: the fewest whole days whose enters reach
    # `ranker_lists` (a small platform's one day holds too few lists for its one-SE choices to resolve),
    # at most `max_ranker_share` of the log (LightFM "a", fit before the ranker's window, keeps the rest).
    ranker_days: float | None = None
    ranker_lists: int = 6_000
    max_ranker_share: float = 0.5
    max_candidates: int = 60  # sampled live rooms per training list (sampled-softmax corrected)
    # The share of the ranker's lists that validates its choices. "viewers": the lists of that share of the
    # viewers (a fixed hash of the viewer id) over the WHOLE ranker window, every hour of every day as the
    # held-out day has them, from viewers the training lists never saw; "latest": the window's latest share
    # of time (one evening quarter of one day at the old one-day window).
    validation_share: float = 0.25
    validation: str = "viewers"
    purchase_weight: float = 1.0  # a list whose enter led to a purchase weighs 1 + this (0: traffic only)
    lightfm_columns: bool | None = None  # None: the validation lists decide (choose_lightfm); False: never
    seed: int = 0
    # Threads of the LightFM fit whose column the ranker's lists carry ("a"): every validation choice
    # (LightFM's columns, two parts, favourites first) is made on it. LightFM's multi-threaded fit is
    # Hogwild (threads race on shared embeddings), so the same log gave a different "a" and LightFM kept on
    # one run and dropped on the next; one thread with the model's fixed seed gives the same choices on
    # every run. The final fit (what serves) keeps `model.num_threads`. 0: `model.num_threads` for both.
    decision_threads: int = 1
    # How the known merchants' offset per repeat band is chosen on the validation lists
    # (ranking.ranker.with_known_offsets, KNOWN_OFFSET_RULES; "none": the learned order alone).
    known_offset: str = "discovery"
    # Which LightFM scores the ranker's lists carry (LIGHTFM_A). "daily": each whole day of the ranker's window
    # is scored by a LightFM fit on everything before that day, so the column the ranker learns and validates
    # is as fresh as the serving one (refit every round); "once": one fit before the whole window (a column
    # up to the window's length stale, while the feed's is at most a round old).
    lightfm_a: str = "daily"
    # How fresh the merchant popularity of the ranker's lists is (ranking.replay.POPULARITIES: "snapshot", the
    # trainer's 10-minute table; "exact", the enters up to each list's moment) and what its room heat column
    # carries (ranking.replay.HEATS). The evaluation that judges the ranker must replay it the same way.
    popularity: str = "snapshot"
    heat: str = "enters"
    # How the ranker's discovery part is fit (ranking.ranker.fit_ranker): its L2 grid (None: the whole
    # model's) and its objective (DISCOVERY_OBJECTIVES).
    discovery_l2_grid: tuple[float, ...] | None = None
    discovery_objective: str = "softmax"
    # What a repeat band too small to choose its own known-merchant offset gets (ranking.ranker.SMALL_BANDS).
    known_offset_small_bands: str = "zero"
    # How LightFM's columns enter the ranker (LIGHTFM_CHOICES). "switch": the validation lists keep one of
    # three rankers — LightFM everywhere, in the discovery part only, or none — by the one-standard-error
    # rule (`choose_lightfm`); "blend": the mean of the scores of the two rankers with LightFM (everywhere,
    # and in the discovery part only), no switch (`ranking.ranker.blend_rankers`). The switch flips with
    # LightFM's draw (seeds 42/43/44 of one fit on the same lists: kept, dropped, dropped in category 1) and
    # each flip moves new targets by ~0.02; the blend moves continuously (bench/bench_lightfm_choices.py).
    lightfm_choice: str = "switch"
    # How the known-merchant offsets move after their choice to meet issue 13's two lines on the validation
    # lists (ranking.ranker.with_new_line, NEW_LINE_RULES; "none": as `known_offset` chose them).
    new_line: str = "shift"
    # The merchant rate room columns (ranking.ranker.RATE_COLUMNS: enters per impression, share of visits
    # watched, unseen). False: held at 0 in every fit (the ranker before them).
    merchant_rates: bool = False


LIGHTFM_A = ("daily", "once")
LIGHTFM_CHOICES = ("switch", "blend")


@dataclass
class FittedModel:
    model: RankingModel  # LightFM on the whole window, with the ranker, its merchant table and histories
    ranker: (
        Ranker  # with LightFM's columns only when they helped on the validation lists (info["lightfm_used"])
    )
    ranker_no_lightfm: Ranker
    timings: dict[str, float]
    ranker_lightfm: Ranker | None = None  # the variant with LightFM's columns (for the ablation's figures)
    validation: Any = None  # the validation lists the choices were made on (ranking.ranker.Lists)
    lists: Any = None  # the training lists the ranker was fit on (ranking.ranker.Lists)


def training_lists(targets: Sequence[Target], purchase_weight: float) -> Any:
    rows = [
        (design(t.table, t.request), t.target, 1.0 + purchase_weight * float(t.purchase), t.sampling)
        for t in targets
    ]
    return lists_of(
        rows,
        [t.viewer for t in targets],
        [repeat_band(t.request.history) for t in targets],
        [np.stack([t.pop, t.live_pop], axis=1) for t in targets],
    )


VALIDATIONS = ("viewers", "latest")


def ranker_window(log: InteractionLog, until_ms: int, cfg: FitConfig) -> int:
    """Where the ranker's lists start (FitConfig.ranker_days): the last `ranker_days`, or by default the
    fewest whole days before `until_ms` whose enters reach `cfg.ranker_lists`, at most
    `cfg.max_ranker_share` of the log's span and at least one day; a log younger than a day and a quarter
    gives its last fifth."""
    first = int(log.ts.min()) if len(log) else until_ms
    span = until_ms - first
    if cfg.ranker_days is not None:
        if cfg.ranker_days <= 0:
            raise ValueError(f"ranker_days must be > 0 or None (by list count), got {cfg.ranker_days}")
        ranker_from = until_ms - int(cfg.ranker_days * DAY_MS)
    else:
        if not 0.0 < cfg.max_ranker_share < 1.0:
            raise ValueError(f"max_ranker_share must be between 0 and 1, got {cfg.max_ranker_share}")
        most = max(1, round(span * cfg.max_ranker_share / DAY_MS))  # whole days (a log starts after 0:00)
        enters = np.sort(log.ts[(log.type == ENTER) & (log.ts < until_ms)])
        days = 1
        while days < most:
            held = enters.size - int(np.searchsorted(enters, until_ms - days * DAY_MS))
            if held >= cfg.ranker_lists:
                break
            days += 1
        ranker_from = until_ms - days * DAY_MS
    if ranker_from <= first + DAY_MS // 4:  # a young log: the ranker's lists are its last fifth
        ranker_from = first + int(span * 0.8)
    return ranker_from


def validation_viewers(viewer_ids: Sequence[str], share: float, seed: int) -> np.ndarray:
    """A fixed `share` of the viewers (by a hash of the id and the seed, so the same viewer is held out
    on every run and in every window) whose lists validate the ranker's choices."""
    cut = int(share * 2**32)
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{seed}:{v}".encode(), digest_size=4).digest(), "big") < cut
            for v in viewer_ids
        ],
        dtype=bool,
    )


def ranker_targets(
    log: InteractionLog,
    schedule: Schedule,
    features: Mapping[str, RoomFeatures],
    scorer: Scorer | None,
    ranker_from: int,
    until_ms: int,
    cfg: FitConfig,
) -> tuple[list[Target], list[Target]]:
    """The ranker's training and validation enters in [ranker_from, until_ms) (FitConfig.validation).

    Training enters keep `cfg.max_candidates` sampled live rooms; validation enters keep every live room,
    so a validation rank is the rank the evaluation and the gate compute."""
    n_validation = int(cfg.ranker_lists * cfg.validation_share)
    among: list[np.ndarray | None] | None = None
    if cfg.validation == "latest":
        validation_from = ranker_from + int((until_ms - ranker_from) * (1.0 - cfg.validation_share))
        windows = [(ranker_from, validation_from), (validation_from, until_ms)]
    else:
        held_out = validation_viewers(log.viewer_ids, cfg.validation_share, cfg.seed)
        windows = [(ranker_from, until_ms), (ranker_from, until_ms)]
        among = [~held_out, held_out]
    targets, held = replay(
        log,
        schedule,
        features,
        scorer,
        windows,
        [cfg.ranker_lists - n_validation, n_validation],
        seed=cfg.seed,
        max_candidates=[cfg.max_candidates, None],
        viewers=among,
        popularity=cfg.popularity,
        heat=cfg.heat,
    )
    return targets, held


def lightfm_a_windows(
    log: InteractionLog, ranker_from: int, until_ms: int, cfg: FitConfig
) -> list[tuple[int, int, FitConfig]]:
    """The ranker's window in whole days back from `until_ms` (a first part shorter than half a day joins
    the next), each with the config whose list counts are that day's share of the window's enters: with
    `lightfm_a="daily"` a LightFM fit on everything before each day scores its lists; with "once" one fit
    before the window scores the same lists. The "latest" validation keeps the window whole."""
    if cfg.lightfm_a not in LIGHTFM_A:
        raise ValueError(f"lightfm_a must be one of {LIGHTFM_A}, got {cfg.lightfm_a!r}")
    if cfg.validation != "viewers":
        return [(ranker_from, until_ms, cfg)]
    cuts = [until_ms]
    while cuts[-1] - DAY_MS > ranker_from + DAY_MS // 2:
        cuts.append(cuts[-1] - DAY_MS)
    cuts.append(ranker_from)
    cuts.reverse()
    if len(cuts) == 2:
        return [(ranker_from, until_ms, cfg)]
    enters = np.sort(log.ts[(log.type == ENTER) & (log.ts >= ranker_from) & (log.ts < until_ms)])
    total = max(int(enters.size), 1)
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        held = int(np.searchsorted(enters, hi)) - int(np.searchsorted(enters, lo))
        lists = max(2, round(cfg.ranker_lists * held / total))
        out.append((lo, hi, dataclasses.replace(cfg, ranker_lists=lists)))
    return out


def ranker_lists(
    log: InteractionLog,
    features: Mapping[str, RoomFeatures],
    schedule: Schedule,
    until_ms: int,
    cfg: FitConfig = FitConfig(),
    version: str = "model",
    exclude_merchants: Sequence[str] = (),
    timings: dict[str, float] | None = None,
) -> tuple[Lists, Lists]:
    """The ranker's training and validation lists from the log before `until_ms`: each day of the ranker's
    window replayed with the LightFM "a" fit before it (`lightfm_a_windows`), on `cfg.decision_threads`."""
    timings = timings if timings is not None else {}
    ranker_from = ranker_window(log, until_ms, cfg)
    if cfg.decision_threads < 0:
        raise ValueError(
            f"decision_threads must be 0 (the model's threads) or more, got {cfg.decision_threads}"
        )
    decision = cfg.model
    if cfg.decision_threads:
        decision = dataclasses.replace(cfg.model, num_threads=cfg.decision_threads)
    targets, held = [], []
    timings["lightfm_a_s"] = timings["lists_s"] = 0.0
    early: dict[int, RankingModel] = {}
    for lo, hi, cfg_part in lightfm_a_windows(log, ranker_from, until_ms, cfg):
        t0 = time.perf_counter()
        fit_until = lo if cfg.lightfm_a == "daily" else ranker_from
        if fit_until not in early:
            early[fit_until] = train_model(
                build_training_set(log, features, fit_until, cfg.weights, exclude_merchants),
                decision,
                f"{version}-a",
                progress=False,
            )
        timings["lightfm_a_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        part, part_held = ranker_targets(log, schedule, features, Scorer(early[fit_until]), lo, hi, cfg_part)
        targets.extend(part)
        held.extend(part_held)
        timings["lists_s"] += time.perf_counter() - t0
    return training_lists(targets, cfg.purchase_weight), training_lists(held, cfg.purchase_weight)


def choose_rankers(
    lists: Lists, validation: Lists, cfg: FitConfig = FitConfig()
) -> tuple[Ranker, Ranker, Ranker]:
    """The ranker (LightFM's columns where validation keeps them), its ablation without LightFM and the
    variant with LightFM's columns everywhere, each with the known-merchant offsets of `cfg.known_offset`;
    every choice made on `validation`."""
    fit = functools.partial(
        fit_ranker,
        validation=validation,
        discovery_l2_grid=cfg.discovery_l2_grid,
        discovery_objective=cfg.discovery_objective,
    )
    held = () if cfg.merchant_rates else RATE_COLUMNS
    with_lightfm = fit(lists, drop=held)
    ablation = fit(lists, drop=held + LIGHTFM_FEATURES)
    in_discovery = fit(lists, drop=held + LIGHTFM_FEATURES, discovery_only=LIGHTFM_FEATURES)
    # LightFM's columns stay only if they help on the validation lists: on a platform where popularity,
    # history and co-visitation already say what LightFM knows, its column is noise the gate would pay for.
    # In the discovery part alone they are judged on the validation's discovery lists (choose_lightfm).
    ranker = choose_lightfm(
        with_lightfm, ablation, validation.viewers(), discovery=in_discovery, validation=validation
    )
    if cfg.lightfm_choice == "blend":
        # What the switch would have chosen, and by how much, stays in `info` for the reports.
        said = {k: v for k, v in ranker.info.items() if k.startswith("lightfm_")}
        ranker = blend_rankers([with_lightfm, in_discovery], validation)
        ranker.info.update(said)
        ranker.info.update(lightfm_used=1.0, lightfm_discovery_only=0.0, lightfm_blend=1.0)
    if cfg.lightfm_columns is False:  # the gate found them hurting on held-out hours (ranking.train)
        ranker = ablation
        ranker.info["lightfm_used"] = 0.0
    # Where the known merchants stand against the discovery rooms, per repeat band: the same rule for the
    # ranker and its ablation, so the ablation's figures compare LightFM alone.
    ranker = with_known_offsets(ranker, validation, cfg.known_offset, cfg.known_offset_small_bands)
    ablation = with_known_offsets(ablation, validation, cfg.known_offset, cfg.known_offset_small_bands)
    with_lightfm = with_known_offsets(
        with_lightfm, validation, cfg.known_offset, cfg.known_offset_small_bands
    )
    # Then, if the validation lists say new targets on the full list trail popularity, the offsets move
    # down as far as both of issue 13's lines hold there (the same rule for the three).
    ranker = with_new_line(ranker, validation, cfg.new_line, seed=cfg.seed)
    ablation = with_new_line(ablation, validation, cfg.new_line, seed=cfg.seed)
    with_lightfm = with_new_line(with_lightfm, validation, cfg.new_line, seed=cfg.seed)
    return ranker, ablation, with_lightfm


def fit_model(
    log: InteractionLog,
    features: Mapping[str, RoomFeatures],
    schedule: Schedule,
    until_ms: int,
    cfg: FitConfig = FitConfig(),
    version: str = "model",
    exclude_merchants: Sequence[str] = (),
    say: Any = None,
) -> FittedModel:
    """LightFM and the ranker from the log before `until_ms` (see the module docstring)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if cfg.known_offset not in KNOWN_OFFSET_RULES:
        raise ValueError(f"known_offset must be one of {KNOWN_OFFSET_RULES}, got {cfg.known_offset!r}")
    if cfg.validation not in VALIDATIONS:
        raise ValueError(f"validation must be one of {VALIDATIONS}, got {cfg.validation!r}")
    if cfg.new_line not in NEW_LINE_RULES:
        raise ValueError(f"new_line must be one of {NEW_LINE_RULES}, got {cfg.new_line!r}")
    if cfg.lightfm_choice not in LIGHTFM_CHOICES:
        raise ValueError(f"lightfm_choice must be one of {LIGHTFM_CHOICES}, got {cfg.lightfm_choice!r}")
    if not 0.0 < cfg.validation_share < 1.0:
        raise ValueError(f"validation_share must be between 0 and 1, got {cfg.validation_share}")
    lists, validation = ranker_lists(
        log, features, schedule, until_ms, cfg, version, exclude_merchants, timings
    )
    t0 = time.perf_counter()
    ranker, ablation, with_lightfm = choose_rankers(lists, validation, cfg)
    timings["ranker_s"] = time.perf_counter() - t0
    message = (
        f"ranker: {len(lists)} + {len(validation)} validation lists, l2 {ranker.info.get('l2')}, "
        f"favourites first {ranker.favourites_first} (by repeat band {list(ranker.first_by_share)}), "
        f"known-merchant offset by repeat band {list(ranker.known_offset)} "
        f"(new-line shift {ranker.info.get('new_line_shift', 0.0)}), "
        "validation with LightFM "
        f"{with_lightfm.info.get('validation')} vs without {ablation.info.get('validation')}"
    )
    if say is not None:
        print(message, file=say)
    else:  # the trainer: a log line (JSON), not stderr text
        logger.info(
            "ranker fitted",
            extra={
                "fields": {
                    "lists": len(lists),
                    "validation_lists": len(validation),
                    "l2": ranker.info.get("l2"),
                    "favourites_first": ranker.favourites_first,
                    "favourites_first_by_repeat_band": list(ranker.first_by_share),
                    "known_offset_by_repeat_band": list(ranker.known_offset),
                    "new_line_shift": ranker.info.get("new_line_shift", 0.0),
                    "validation_with_lightfm": with_lightfm.info.get("validation"),
                    "validation_without": ablation.info.get("validation"),
                }
            },
        )
    t0 = time.perf_counter()
    data = build_training_set(log, features, until_ms, cfg.weights, exclude_merchants)
    model = train_model(data, cfg.model, version, progress=False)
    timings["lightfm_s"] = time.perf_counter() - t0
    attach_ranker(model, ranker, log, features, until_ms)
    return FittedModel(model, ranker, ablation, timings, with_lightfm, validation, lists)


def attach_ranker(
    model: RankingModel,
    ranker: Ranker,
    log: InteractionLog,
    features: Mapping[str, RoomFeatures],
    until_ms: int,
) -> None:
    """Give the artifact what the feed needs to rank: the weights, the merchant table and the viewers'
    histories as of `until_ms`, in the model's merchant positions."""
    categories = category_vocabulary(features)
    model.with_ranker(ranker)
    model.categories = categories
    model.table = build_merchant_table(log, features, until_ms, model.merchant_ids, categories)
    if not ranker.reads(RATE_COLUMNS):
        model.table.rates = None  # no weight reads them (FitConfig.merchant_rates off): the feed skips them
    pos = {m: i for i, m in enumerate(model.merchant_ids)}
    to_pos = np.array([pos.get(m, -1) for m in log.merchant_ids], dtype=np.int64)
    before = log.ts < until_ms
    model.histories = ViewerHistories.build(
        log.viewer[before],
        to_pos[log.merchant[before]],
        log.type_names()[before],
        log.dwell_ms[before],
        log.entry_code[before],
        log.ts[before],
        log.viewer_ids,
        until_ms,
    )


def evaluate_model(
    log: InteractionLog,
    features: Mapping[str, RoomFeatures],
    schedule: Schedule,
    fitted: Mapping[str, tuple[RankingModel, Ranker]],
    window: tuple[int, int],
    max_targets: int = 10_000,
    seed: int = 0,
    extra: Mapping[str, Method] | None = None,
    page: PageJudge | None = None,
    popularity: str = "snapshot",
    heat: str = "enters",
    served_table: bool = False,
) -> tuple[Evaluation, list[Target]]:
    """Replay `window` once per LightFM model and judge each named (model, ranker) against the baselines.

    `fitted` maps a method name to its LightFM model and ranker; models given more than once are
    replayed once. The first name's LightFM alone is judged as "lightfm". `page` (feed.replay.FeedPage)
    judges every method by the page the feed would serve. `popularity` and `heat` as in `replay`;
    `served_table`: each model ranks with its own merchant table all window long (as the feed serves a
    model until the next one) instead of the replay's.
    """
    methods: dict[str, Method] = dict(extra or {})
    by_model: dict[int, list[Target]] = {}
    first: list[Target] | None = None
    for name, (model, ranker) in fitted.items():
        key = id(model)
        if key not in by_model:
            (by_model[key],) = replay(
                log,
                schedule,
                features,
                Scorer(model),
                [window],
                [max_targets],
                seed=seed,
                popularity=popularity,
                heat=heat,
                table_as_of=model.table.as_of_ms if served_table and model.table is not None else None,
            )
        targets = by_model[key]
        if first is None:
            first = targets
            methods.setdefault("lightfm", lightfm_method)
        methods[name] = _on(targets, first, ranker_method(ranker))
    assert first is not None
    return evaluate(first, methods, seed, page), first


def _on(own: list[Target], first: list[Target], method: Method) -> Method:
    """`method` judged on `own` targets (the same enters as `first`, replayed with another LightFM model)."""
    if own is first:
        return method
    by_event = {t.event: t for t in own}
    return lambda t: method(by_event[t.event])


def merchant_features(rooms: Any) -> dict[str, RoomFeatures]:
    """One RoomFeatures per merchant (its first room's) from rooms or anything with `.features`."""
    out: dict[str, RoomFeatures] = {}
    for r in rooms:
        f = r.features if hasattr(r, "features") else r
        out.setdefault(f.merchant_id, f)
    return out
