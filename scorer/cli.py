"""``scorer`` command line. Every setting is a flag and a ``SCORER_*`` variable (flag wins)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

import orjson

from scorer._version import __version__
from scorer.settings import Settings, env_name


def _add_settings(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name in names:
        f = fields[name]
        help_text = f"{f.metadata['doc']} [env {env_name(name)}; default {f.default!r}]"
        if name == "bundle":
            parser.add_argument("bundle", nargs="?", default=None, help=help_text.replace("(positional argument of the CLI)", ""))
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, type=f.metadata["kind"], choices=f.metadata["choices"], help=help_text)


# Where a bundle is looked for when none is named (argument or SCORER_BUNDLE) and /model is absent:
# the SageMaker hosting contract's model directory, then the example embedded in the container image.
FALLBACK_BUNDLES = ("/opt/ml/model", "/opt/scorer/example-bundle")


def _settings(args: argparse.Namespace, names: tuple[str, ...]) -> Settings:
    overrides: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    settings = Settings.from_env(**overrides)
    default = dataclasses.fields(Settings)[0].default
    if settings.bundle == default and not os.path.exists(default):
        found = next((p for p in FALLBACK_BUNDLES if os.path.exists(p)), None)
        if found is not None:
            settings = dataclasses.replace(settings, bundle=found)
    return settings


_BATCH_ONLY = ("input", "output", "output_format", "chunk_rows", "max_inflight_mb", "keep_columns",
               "bad_rows", "max_rejected_rows", "overwrite", "lock_seconds", "shard_count", "shard_index", "engine",
               "spark_master")
_LOADING = ("bundle", "extra_columns", "echo_bad_values", "check_requirements", "install_requirements",
            "requirements_cache", "mojo_backend", "spark_scoring", "scoring_plan", "plan_cache",
            "bundle_digest", "log_level", "log_format")
SERVE_SETTINGS = tuple(f.name for f in dataclasses.fields(Settings) if f.name not in _BATCH_ONLY)
BATCH_SETTINGS = (*_LOADING, "workers", *_BATCH_ONLY)
INFO_SETTINGS = _LOADING


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scorer", description="Serve and score model bundles.")
    parser.add_argument("--version", action="version", version=f"scorer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Serve a bundle over HTTP (POST /predict).")
    _add_settings(serve, SERVE_SETTINGS)
    batch = sub.add_parser(
        "batch", help="Score a file or a directory of files (CSV, Parquet, JSON Lines, Arrow) into an output directory.",
        epilog="exit codes: 0 all rows scored; 2 usage or input error (nothing written); 3 bundle failed to load; "
               "4 all files committed but some rows rejected; 5 one or more files failed",
    )
    _add_settings(batch, BATCH_SETTINGS)
    info = sub.add_parser("info", help="Load a bundle, score its sample input, and print its metadata as JSON.")
    _add_settings(info, INFO_SETTINGS)
    bundle = sub.add_parser("bundle", help="Work on a bundle ahead of serving it.")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True)
    compile_ = bundle_sub.add_parser(
        "compile", help="Compile a scikit-learn bundle's scoring plan, verify it and store it in --plan-cache (as "
                        "part of an image's build: the server then starts without importing scikit-learn); "
                        "exit 3 when the pipeline has no plan, naming the step.")
    _add_settings(compile_, INFO_SETTINGS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = {"serve": SERVE_SETTINGS, "batch": BATCH_SETTINGS, "info": INFO_SETTINGS, "bundle": INFO_SETTINGS}[args.command]
    try:
        settings = _settings(args, names)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "bundle":  # compile: a plan or nothing (require), stored where --plan-cache says
        settings = dataclasses.replace(settings, scoring_plan="require")
    if args.command == "serve":
        from scorer.serving.process import serve

        return serve(settings)
    from scorer._logging import configure

    if args.command == "batch":
        from scorer import batch

        configure(settings.log_level, settings.log_format)
        return batch.run(settings)
    from scorer.core import Scorer
    from scorer.load_options import LoadOptions
    from scorer.errors import EXIT_OK, ScorerError, exit_code

    configure(settings.log_level, settings.log_format)
    try:
        scorer = Scorer.load(settings.bundle, LoadOptions.from_settings(settings))
    except ScorerError as exc:
        print(f"scorer: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    try:
        report: dict[str, Any] | None
        if args.command == "info":
            report = scorer.metadata()
        else:
            report = _compiled(scorer)
            if report is None:
                print(f"scorer: {settings.bundle}: the plan could not be stored (see the log)", file=sys.stderr)
                return 3
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    finally:
        scorer.close()  # a registry download is not kept
    return EXIT_OK


def _compiled(scorer: Any) -> dict[str, Any] | None:
    """``scorer bundle compile``'s answer: where the plan is stored, or that the bundle has none to
    compile (not a scikit-learn model); None when a plan was compiled but could not be stored."""
    scoring = scorer.metadata()["scoring"] or {}
    if scoring.get("path") == "plan" and "cache" not in scoring:
        return None
    plan = scoring["cache"] if scoring.get("path") == "plan" else "nothing to compile: not a scikit-learn model"
    return {"bundle": str(scorer.bundle.root), "digest": f"sha256:{scorer.bundle.digest}", "plan": plan,
            "scoring": scoring or None}


if __name__ == "__main__":
    sys.exit(main())
