"""Command-line interface: ``scclust run | validate | init | schema``.

Thin by design: it parses arguments, loads the config and calls :func:`scclust.workflow.run`.
Exit status: 0 success, 2 user error (one line on stderr, no traceback), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
import warnings

from ._errors import UserError

EXIT_OK, EXIT_BUG, EXIT_USER = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scclust", description="Config-driven clustering of integrated single-cell data.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the stages of a config")
    r.add_argument("config", help="YAML config file")
    r.add_argument(
        "--input",
        help="override 'input': an .h5ad path, builtin:NAME (simulate, pbmc68k, counts, integrated) or "
        "data:NAME (a real dataset fetched into the cache: scclust.datasets.fetch)",
    )
    r.add_argument("--outdir", help="override 'outdir'")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set leiden.resolutions=[0.4,0.6] (repeatable)",
    )
    r.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        default=None,
        help="run every stage, ignoring the checkpoint of an earlier run in outdir",
    )
    r.add_argument(
        "--dask-address",
        metavar="TCP://HOST:PORT",
        help="override 'dask.address': the scheduler of an existing Dask cluster for out-of-core steps",
    )
    r.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    r.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")

    v = sub.add_parser("validate", help="check a config and that it fits its input (or --input), without running it")
    v.add_argument("config")
    v.add_argument(
        "--input", help="check the config against this input instead of its own (.obs / .obsm keys, genes, key clashes)"
    )
    v.add_argument("--config-only", action="store_true", help="check the config alone, without reading its input")
    v.add_argument("--outdir")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    i = sub.add_parser("init", help="print a commented config for your data (every key with its default and meaning)")
    kind = i.add_mutually_exclusive_group()
    kind.add_argument(
        "--integrated",
        dest="kind",
        action="store_const",
        const="integrated",
        default="integrated",
        help="for an integrated AnnData: embeddings in .obsm, log-normalized genes in .raw (default)",
    )
    kind.add_argument(
        "--counts",
        dest="kind",
        action="store_const",
        const="counts",
        help="for raw counts: starts with the prepare stage (QC, normalize, HVG, PCA, Harmony, UMAP)",
    )
    i.add_argument("--input", help="your .h5ad: the template names its batch column, embedding and genes")
    i.add_argument("-o", "--output", help="write to this file instead of stdout")

    s = sub.add_parser("schema", help="print the JSON schema of configs")
    s.add_argument("-o", "--output", help="write to this file instead of stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return EXIT_OK
    if args.command is None:
        _parser().print_help()
        return EXIT_USER
    debug = getattr(args, "debug", False)
    try:
        return _dispatch(args)
    except UserError as err:
        print(f"scclust: error: {err}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(
            "scclust: interrupted; finished stages are checkpointed: rerun the same command to resume", file=sys.stderr
        )
        return 130
    except BrokenPipeError:  # e.g. `scclust schema | head`: the reader left, nothing went wrong here
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:
        if debug:
            traceback.print_exc()
        print(
            f"scclust: unexpected error ({type(err).__name__}: {err}); this is a bug, please report it "
            "with the output of --debug",
            file=sys.stderr,
        )
        return EXIT_BUG


def _dispatch(args: argparse.Namespace) -> int:
    from .config import json_schema, load_config

    if args.command == "schema":
        text = json.dumps(json_schema(), indent=2)
        if args.output:
            from ._io import write_text

            write_text(args.output, text + "\n")
        else:
            print(text)
        return EXIT_OK
    if args.command == "init":
        from .config import template

        adata = None
        if args.input is not None:
            from ._io import read_input_summary

            adata = read_input_summary(args.input)
        text = template(args.kind, adata, input=args.input or "my_data.h5ad")
        if args.output:
            from ._io import write_text

            write_text(args.output, text)
        else:
            print(text)
        return EXIT_OK
    overrides = list(args.overrides)
    if getattr(args, "dask_address", None):
        overrides.append(f"dask.address={args.dask_address}")
    cfg = load_config(args.config, overrides=overrides, input=args.input, outdir=args.outdir)
    if args.command == "validate":
        _setup_logging(quiet=False, debug=False)
        checked = ""
        if not args.config_only:
            from ._io import read_input_summary
            from .workflow import check_names, preflight

            preflight(check_names(read_input_summary(cfg.input)), cfg)
            checked = f"; fits {cfg.input}"
        print(f"{args.config}: valid; stages: {', '.join(cfg.stages)}{checked}")
        return EXIT_OK
    if args.resume is not None:
        cfg = cfg.model_copy(update={"resume": args.resume})
    _setup_logging(quiet=args.quiet, debug=args.debug)
    from .workflow import run

    run(cfg, progress=None if args.quiet else lambda msg: print(f"scclust: {msg}", file=sys.stderr, flush=True))
    return EXIT_OK


def _setup_logging(*, quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scclust:   %(message)s"))
    root = logging.getLogger("scclust")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if not debug:
        # third-party chatter (scanpy's FutureWarnings, numba) is not the user's business here
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*is faster on contiguous arrays")  # numba, in sc.pp.regress_out
        logging.getLogger("harmonypy").setLevel(logging.WARNING)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
