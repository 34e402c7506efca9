"""Command-line verb of the ranking domain: `roomfeed train` (`roomfeed evaluate` lives with the simulator).

Owns its argparse options (`add_train_args`) and the async entry point the project CLI calls
(`train_command`) with the one `Settings` object.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from ranking.dataset import WeightParams
from ranking.model import ModelParams
from ranking.viewer_state import ViewerStateStore
from roomfeed.leader import TRAINER, Leases

log = logging.getLogger("roomfeed.ranking.cli")


def parse_duration(text: str) -> float:
    """'10m' → 600.0 seconds (s, m, h, d)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 10m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    d = ModelParams()
    p.add_argument("--components", type=int, default=d.no_components, help="LightFM embedding size")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--item-alpha", type=float, default=d.item_alpha)
    p.add_argument("--user-alpha", type=float, default=d.user_alpha)
    p.add_argument("--max-sampled", type=int, default=d.max_sampled)
    p.add_argument("--threads", type=int, default=d.num_threads, help="1 for a reproducible fit")
    p.add_argument("--seed", type=int, default=d.seed)
    w = WeightParams()
    p.add_argument(
        "--half-life-days", type=float, default=w.half_life_days, help="time decay of interactions"
    )
    p.add_argument("--purchase-weight", type=float, default=w.purchase_weight)


def _model_params(args: argparse.Namespace) -> ModelParams:
    return ModelParams(
        no_components=args.components,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        item_alpha=args.item_alpha,
        user_alpha=args.user_alpha,
        max_sampled=args.max_sampled,
        num_threads=args.threads,
        seed=args.seed,
    )


def _weight_params(args: argparse.Namespace) -> WeightParams:
    return WeightParams(half_life_days=args.half_life_days, purchase_weight=args.purchase_weight)


def add_train_args(parser: argparse.ArgumentParser) -> None:
    _add_model_args(parser)
    parser.add_argument("--days", type=float, default=14.0, help="archive window to train on")
    parser.add_argument(
        "--eval-hours", type=float, default=24.0, help="last hours held out to gate promotion"
    )
    parser.add_argument(
        "--features",
        type=Path,
        default=None,
        help="JSON {merchant_id: RoomFeatures fields}; default: the rooms catalogue",
    )
    parser.add_argument("--every", type=parse_duration, default=None, help="train periodically, e.g. 10m")
    parser.add_argument("--no-promote", action="store_true", help="register the candidate only")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")


async def train_command(settings: Any, args: argparse.Namespace, page_of: Any = None) -> int:
    """`page_of`: the feed's page judge (feed.replay.FeedPage), handed in by the composition root, so the
    promotion gate judges the page the feed would serve."""
    from ranking.train import features_from_rooms, load_features, train_forever, train_once
    from roomfeed.redis_client import create_redis

    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=settings.host)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    redis = create_redis(settings)
    # One trainer at a time: a second trainer waits as a standby (`--every`) or exits (one round).
    leases = Leases(settings.database_url)
    try:
        if not args.every and not await leases.holds(TRAINER):
            log.warning("another trainer holds the trainer lease; not training")
            return 3
        features = load_features(args.features) if args.features else await features_from_rooms(pool)
        kwargs: dict[str, Any] = {
            "params": _model_params(args),
            "weights": _weight_params(args),
            "days": args.days,
            "eval_hours": args.eval_hours,
            "features": features,
            "promote": not args.no_promote,
            "page_of": page_of,
            "states": ViewerStateStore(redis),
        }
        if args.every:
            await train_forever(
                pool,
                args.every,
                refresh_features=args.features is None,
                leadership=leases.leadership(TRAINER),
                **kwargs,
            )
            return 0
        result = await train_once(pool, **kwargs)
        print(
            orjson.dumps(
                {
                    "version": result.version,
                    "promoted": result.promoted,
                    "seconds": round(result.seconds, 1),
                    "metrics": result.metrics,
                }
            ).decode()
        )
        return 0
    finally:
        await leases.close()
        await redis.aclose()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry until the project CLI wires the verbs: python -m ranking.cli train …"""
    import asyncio

    from roomfeed.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m ranking.cli")
    sub = parser.add_subparsers(dest="verb", required=True)
    add_train_args(sub.add_parser("train"))
    args = parser.parse_args(argv)
    return asyncio.run(train_command(Settings.from_env(), args))


if __name__ == "__main__":
    raise SystemExit(main())
