"""The trained model as an artifact: LightFM fitting and the (de)serialisable `RankingModel`.

Owns the hyper-parameters (`ModelParams`), fitting LightFM WARP on a `TrainingSet` (a progress bar
on a terminal: roomfeed.progress), and the artifact format: plain numpy arrays (feature embeddings
and biases) plus orjson metadata in one `.npz` blob — no pickle, so any API process can load it safely.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
import scipy.sparse as sp
from lightfm import LightFM

from ranking.dataset import TrainingSet
from ranking.history import ViewerHistories
from ranking.ranker import FEATURES, MerchantTable, Ranker
from roomfeed.progress import Progress


@dataclass(frozen=True)
class ModelParams:
    no_components: int = 30
    epochs: int = 10
    learning_rate: float = 0.05
    item_alpha: float = 1e-6
    user_alpha: float = 1e-6
    max_sampled: int = 10
    loss: str = "warp"
    num_threads: int = 2
    seed: int = 42
    # LightFM fits averaged into the one model (seeds seed, seed+1, ...): a single WARP fit's draw moves
    # the column the ranker reads (new-target HR@5 by ~0.02, docs/ranking.md), and the ranker learns its
    # weight on one fit's column and serves another's. The mean of the fits' scores is one bilinear model
    # (`average_models`), `fits_components` wide: None keeps `no_components` (the feed's dot products cost
    # what one fit's do), 0 keeps every fit's components side by side.
    fits: int = 1
    fits_components: int | None = None


@dataclass
class RankingModel:
    """User and item feature embeddings; representations are feature rows times these."""

    version: str
    params: dict[str, Any]
    user_ids: list[str]
    merchant_ids: list[str]
    user_feature_names: list[str]
    item_feature_names: list[str]
    user_repr: np.ndarray  # (n_users, k) float32
    user_bias: np.ndarray
    item_repr: np.ndarray  # (n_items, k)
    item_bias: np.ndarray
    user_feature_emb: np.ndarray
    user_feature_bias: np.ndarray
    item_feature_emb: np.ndarray
    item_feature_bias: np.ndarray
    merchant_popularity: np.ndarray
    since_ms: int = 0
    until_ms: int = 0
    # The learned ranker (None: a LightFM-only artifact), what it knows per merchant (model positions)
    # and every viewer's history as of `until_ms` (the feed adds the visits since).
    ranker_weights: np.ndarray | None = None
    ranker_favourites_first: int = 0  # the ranker's favourites-first policy (ranking.ranker.Ranker)
    ranker_first_by_share: tuple[int, ...] = ()  # its count per repeat-share band (empty: one count)
    ranker_known_offset: tuple[float, ...] = ()  # its known-merchant offset per repeat-share band (empty: 0)
    ranker_discovery: np.ndarray | None = None  # the two-part ranker's weights for never-entered merchants
    categories: list[str] | None = None
    table: MerchantTable | None = None
    histories: ViewerHistories | None = None

    @property
    def ranker(self) -> Ranker | None:
        if self.ranker_weights is None:
            return None
        return Ranker(
            self.ranker_weights,
            favourites_first=self.ranker_favourites_first,
            discovery=self.ranker_discovery,
            first_by_share=self.ranker_first_by_share,
            known_offset=self.ranker_known_offset,
        )

    def with_ranker(self, ranker: Ranker) -> None:
        """Rank with `ranker` (its weights and its favourites-first policy, together)."""
        self.ranker_weights = ranker.weights.astype(np.float64)
        self.ranker_favourites_first = ranker.favourites_first
        self.ranker_first_by_share = tuple(ranker.first_by_share)
        self.ranker_known_offset = tuple(ranker.known_offset)
        self.ranker_discovery = ranker.discovery.astype(np.float64) if ranker.discovery is not None else None

    def _extras(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        if self.ranker_weights is not None:
            meta["ranker_features"] = list(FEATURES)
            meta["ranker_favourites_first"] = self.ranker_favourites_first
            meta["ranker_first_by_share"] = list(self.ranker_first_by_share)
            meta["ranker_known_offset"] = list(self.ranker_known_offset)
            arrays["ranker_weights"] = self.ranker_weights
            if self.ranker_discovery is not None:
                arrays["ranker_discovery"] = self.ranker_discovery
        if self.table is not None:
            t = self.table
            meta.update(
                categories=self.categories or [],
                table_as_of_ms=t.as_of_ms,
                table_sizes=[t.n_categories, t.n_bands],
            )
            arrays.update(
                t_category=t.category,
                t_band=t.band,
                t_pop_count=t.pop_count,
                t_pop_decayed=t.pop_decayed,
                t_cov_indptr=t.covisit.indptr,
                t_cov_indices=t.covisit.indices,
                t_cov_data=t.covisit.data,
            )
            if t.rates is not None:
                arrays["t_rates"] = t.rates
        if self.histories is not None:
            h = self.histories
            meta.update(history_viewers=h.viewer_ids, history_until_ms=h.until_ms)
            arrays.update(h_indptr=h.indptr, h_merchants=h.merchants, h_stats=h.stats, h_last_ms=h.last_ms)
        return meta, arrays

    @staticmethod
    def _from_extras(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "ranker_weights" in arrays:
            stored = Ranker(
                arrays.pop("ranker_weights"),
                tuple(meta.pop("ranker_features")),
                discovery=arrays.pop("ranker_discovery", None),
            )
            out["ranker_weights"] = stored.weights
            out["ranker_discovery"] = stored.discovery
            out["ranker_favourites_first"] = int(meta.pop("ranker_favourites_first", 0))
            out["ranker_first_by_share"] = tuple(int(k) for k in meta.pop("ranker_first_by_share", ()))
            out["ranker_known_offset"] = tuple(float(d) for d in meta.pop("ranker_known_offset", ()))
        if "t_category" in arrays:
            n = arrays["t_category"].shape[0]
            out["categories"] = meta.pop("categories")
            sizes = meta.pop("table_sizes")
            out["table"] = MerchantTable(
                category=arrays.pop("t_category"),
                band=arrays.pop("t_band"),
                pop_count=arrays.pop("t_pop_count"),
                pop_decayed=arrays.pop("t_pop_decayed"),
                as_of_ms=int(meta.pop("table_as_of_ms")),
                covisit=sp.csr_matrix(
                    (arrays.pop("t_cov_data"), arrays.pop("t_cov_indices"), arrays.pop("t_cov_indptr")),
                    shape=(n, n),
                ),
                n_categories=int(sizes[0]),
                n_bands=int(sizes[1]),
                rates=arrays.pop("t_rates", None),
            )
        if "h_indptr" in arrays:
            out["histories"] = ViewerHistories(
                viewer_ids=meta.pop("history_viewers"),
                indptr=arrays.pop("h_indptr"),
                merchants=arrays.pop("h_merchants"),
                stats=arrays.pop("h_stats"),
                last_ms=arrays.pop("h_last_ms"),
                until_ms=int(meta.pop("history_until_ms")),
            )
        return out

    def to_bytes(self) -> bytes:
        meta = {
            k: getattr(self, k)
            for k in (
                "version",
                "params",
                "user_ids",
                "merchant_ids",
                "user_feature_names",
                "item_feature_names",
                "since_ms",
                "until_ms",
            )
        }
        extra_meta, extra_arrays = self._extras()
        meta.update(extra_meta)
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
            **extra_arrays,  # type: ignore[arg-type]
            **{
                k: getattr(self, k)
                for k in (
                    "user_repr",
                    "user_bias",
                    "item_repr",
                    "item_bias",
                    "user_feature_emb",
                    "user_feature_bias",
                    "item_feature_emb",
                    "item_feature_bias",
                    "merchant_popularity",
                )
            },
        )
        return buf.getvalue()

    def without_viewer(self, viewer_id: str) -> RankingModel:
        """This model without the viewer's vector and identity feature (erasure): the viewer is then
        scored as a new viewer, from features alone."""

        keep_users = [i for i, u in enumerate(self.user_ids) if u != viewer_id]
        keep_features = [i for i, f in enumerate(self.user_feature_names) if f != f"id:{viewer_id}"]
        return dataclasses.replace(
            self,
            user_ids=[self.user_ids[i] for i in keep_users],
            user_repr=self.user_repr[keep_users],
            user_bias=self.user_bias[keep_users],
            user_feature_names=[self.user_feature_names[i] for i in keep_features],
            user_feature_emb=self.user_feature_emb[keep_features],
            user_feature_bias=self.user_feature_bias[keep_features],
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> RankingModel:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta = orjson.loads(z["meta"].tobytes())
            arrays = {k: z[k] for k in z.files if k != "meta"}
        extras = cls._from_extras(meta, arrays)
        return cls(**meta, **arrays, **extras)


def fit_lightfm(
    data: TrainingSet,
    params: ModelParams,
    progress: bool = True,
    on_epoch: Callable[[int, LightFM], None] | None = None,
) -> LightFM:
    model = LightFM(
        no_components=params.no_components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        item_alpha=params.item_alpha,
        user_alpha=params.user_alpha,
        max_sampled=params.max_sampled,
        random_state=np.random.RandomState(params.seed),
    )
    bar = Progress("train", params.epochs, unit="epoch") if progress else None
    for epoch in range(params.epochs):
        model.fit_partial(
            data.interactions,
            user_features=data.user_features,
            item_features=data.item_features,
            sample_weight=data.weights,
            epochs=1,
            num_threads=params.num_threads,
        )
        if bar:
            bar.update()
        if on_epoch:
            on_epoch(epoch, model)
    if bar:
        bar.close()
    return model


def metadata_representation(
    feature_emb: np.ndarray, feature_bias: np.ndarray, idx: Sequence[int], identity_share: float
) -> tuple[np.ndarray, float]:
    """A merchant's item vector and bias from its metadata features alone (`idx`: their rows).

    A known merchant is its identity (share `identity_share`) plus the mean of its features; a merchant
    the model holds no watch of is the feature part only — its identity's expected contribution, 0.
    The one rule for every such merchant: one first seen at scoring time (`Scorer`) and one the training
    set listed without a single interaction (`to_ranking_model`)."""
    if len(idx) == 0:
        return np.zeros(feature_emb.shape[1], dtype=np.float32), 0.0
    shared = 1.0 - identity_share
    emb = feature_emb[list(idx)].mean(axis=0) * shared
    return emb.astype(np.float32), float(feature_bias[list(idx)].mean()) * shared


def cold_items(data: TrainingSet) -> np.ndarray:
    """Positions of the merchants with no interaction in the training window (listed for their features)."""
    counts = np.bincount(data.interactions.col, minlength=len(data.merchant_ids))
    out: np.ndarray = np.flatnonzero(counts == 0)
    return out


def to_ranking_model(model: LightFM, data: TrainingSet, params: ModelParams, version: str) -> RankingModel:
    ub, ur = model.get_user_representations(data.user_features)
    ib, ir = model.get_item_representations(data.item_features)
    # A merchant with no interaction in the window was only ever a WARP negative: every sampled violation
    # pushed its identity embedding and bias down, and nothing pulled them up (newcomers world, seed 1:
    # identity bias -0.84 vs -0.07 for watched merchants, LightFM AUC of its test targets 0.258, worse than
    # chance). Its identity says nothing learned about it, so it is scored from its metadata alone, as
    # the Scorer scores a merchant it never saw (AUC 0.696 there; docs/ranking.md "Cold merchants").
    items = data.item_features.tocsr()
    feature_pos = {n: i for i, n in enumerate(data.item_feature_names)}
    for i in cold_items(data).tolist():
        own = feature_pos[f"id:{data.merchant_ids[i]}"]
        idx = [int(j) for j in items.indices[items.indptr[i] : items.indptr[i + 1]] if j != own]
        ir[i], ib[i] = metadata_representation(
            model.item_embeddings, model.item_biases, idx, data.identity_share
        )
    return RankingModel(
        version=version,
        params={**asdict(params), "identity_share": data.identity_share},
        user_ids=data.user_ids,
        merchant_ids=data.merchant_ids,
        user_feature_names=data.user_feature_names,
        item_feature_names=data.item_feature_names,
        user_repr=ur.astype(np.float32),
        user_bias=ub.astype(np.float32),
        item_repr=ir.astype(np.float32),
        item_bias=ib.astype(np.float32),
        user_feature_emb=model.user_embeddings.astype(np.float32),
        user_feature_bias=model.user_biases.astype(np.float32),
        item_feature_emb=model.item_embeddings.astype(np.float32),
        item_feature_bias=model.item_biases.astype(np.float32),
        merchant_popularity=data.merchant_popularity,
        since_ms=data.since_ms,
        until_ms=data.until_ms,
    )


def average_models(models: Sequence[RankingModel], components: int | None) -> RankingModel:
    """One model whose score is the mean of `models`' scores (same users, merchants and features).

    A score is bias_u + bias_i + u . i with u, i linear in the feature embeddings, so the mean of K fits is
    the fits' embeddings side by side, each scaled by 1/sqrt(K), with the biases averaged. `components`
    (not None, not 0) keeps that score's best rank-`components` approximation over the model's users and
    merchants: both sides are mapped by the matrices that give the truncated SVD of the mean interaction
    matrix, applied to the feature embeddings too, so a viewer or merchant scored from its features alone
    (the Scorer) gets the same map."""
    first = models[0]
    scale = np.float32(1.0 / np.sqrt(len(models)))

    def side(name: str) -> np.ndarray:
        return np.hstack([getattr(m, name) for m in models]).astype(np.float32) * scale

    def mean(name: str) -> np.ndarray:
        out: np.ndarray = np.mean([getattr(m, name) for m in models], axis=0).astype(np.float32)
        return out

    user_repr, item_repr = side("user_repr"), side("item_repr")
    user_emb, item_emb = side("user_feature_emb"), side("item_feature_emb")
    if components and components < user_repr.shape[1]:
        to_user, to_item = _truncation(user_repr, item_repr, components)
        user_repr, user_emb = user_repr @ to_user, user_emb @ to_user
        item_repr, item_emb = item_repr @ to_item, item_emb @ to_item
    return dataclasses.replace(
        first,
        params={**first.params, "fits": len(models), "components": int(user_repr.shape[1])},
        user_repr=user_repr.astype(np.float32),
        user_bias=mean("user_bias"),
        item_repr=item_repr.astype(np.float32),
        item_bias=mean("item_bias"),
        user_feature_emb=user_emb.astype(np.float32),
        user_feature_bias=mean("user_feature_bias"),
        item_feature_emb=item_emb.astype(np.float32),
        item_feature_bias=mean("item_feature_bias"),
    )


def _truncation(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps (D, k) of each side such that (users @ a) (items @ b)^T is the best rank-k approximation of
    users items^T (Frobenius): users = Q_u R_u, items = Q_i R_i, the SVD of R_u R_i^T = A S B^T, then
    a = R_u^+ A_k S_k^1/2 and b = R_i^+ B_k S_k^1/2 (R from the Gram matrices; directions with no
    spread get no weight)."""

    def root(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, vectors = np.linalg.eigh(x.astype(np.float64).T @ x.astype(np.float64))
        keep = values > values.max() * 1e-10
        sq = np.sqrt(np.where(keep, values, 1.0))
        r = (vectors * np.where(keep, sq, 0.0)).T  # R = S^1/2 V^T
        r_pinv = vectors * np.where(keep, 1.0 / sq, 0.0)  # V S^-1/2
        return r, r_pinv

    ru, ru_pinv = root(users)
    ri, ri_pinv = root(items)
    a, s, bt = np.linalg.svd(ru @ ri.T)
    half = np.sqrt(s[:k])
    return (ru_pinv @ (a[:, :k] * half)), (ri_pinv @ (bt[:k].T * half))


def train_model(data: TrainingSet, params: ModelParams, version: str, progress: bool = True) -> RankingModel:
    if params.fits < 1:
        raise ValueError(f"fits must be >= 1, got {params.fits}")
    models = [
        to_ranking_model(
            fit_lightfm(data, dataclasses.replace(params, seed=params.seed + j), progress),
            data,
            params,
            version,
        )
        for j in range(params.fits)
    ]
    if len(models) == 1:
        return models[0]
    components = params.no_components if params.fits_components is None else params.fits_components
    return average_models(models, components)
