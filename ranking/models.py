"""Ranking's response models (msgspec): what `ranking.http`'s typed routes answer."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from roomfeed.paging import ListQuery, Next


class Model(msgspec.Struct, kw_only=True):
    """A model version in the registry."""

    version: str
    status: Annotated[str, Meta(description="candidate, promoted, retired, ...")]
    params: Annotated[dict[str, Any], Meta(description="the trainer's parameters")]
    metrics: Annotated[dict[str, Any], Meta(description="its evaluation on held-out data")]
    created_at: Annotated[str, Meta(description="ISO 8601")]
    data_since: str | None
    data_until: str | None
    promoted_at: str | None
    promoted_by: str | None


class ModelList(msgspec.Struct, kw_only=True):
    serving: Annotated[str | None, Meta(description="the version this process serves")]
    models: list[Model]
    next: Next


class ModelsQuery(ListQuery, kw_only=True):
    """`?limit=&after=`: model versions, newest first."""

    limit: Annotated[int, Meta(ge=1, le=500, description="at most this many versions")] = 50
