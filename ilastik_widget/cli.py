"""The ``ilastik-widget`` command line.

``ilastik-widget predict PROJECT INPUT... --output DIR``
    Apply a saved, trained project to images (OME-Zarr/zarr paths or URLs, TIFF files), locally or on a Dask
    scheduler (``--scheduler tcp://host:8786`` or a scheduler file), writing one ``<name>.ome.zarr`` per input
    (or TIFF files with ``--format tiff``) into DIR. ``--outputs objects --objects-label 2 --threshold 0.5`` adds
    the objects of class 2 (a label image and a table as CSV and Parquet per input).

``ilastik-widget demo [FOLDER] [--no-browser] [--port P]``
    Start the demo notebook, copied into FOLDER (see :mod:`ilastik_widget.demo`).

Exit codes: 0 success, 1 error (message on stderr), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _chunks(text: str):
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"chunks must be integers like 256 or 64,256,256, got {text!r}") from None
    if not parts or any(p < 1 for p in parts):
        raise argparse.ArgumentTypeError(f"chunks must be positive, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr (what is wrong and where to read more), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``ilastik-widget`` command and its ``predict`` and ``demo`` subcommands
    (bad usage: one line on stderr, exit code 2)."""
    from . import __version__

    parser = _Parser(prog="ilastik-widget", description="Interactive ilastik-style pixel classification: command line.")
    parser.add_argument("--version", action="version", version=f"ilastik-widget {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "predict",
        help="predict images with a saved project (batch, local or on a Dask cluster)",
        description="Apply a trained project to whole images or volumes and write the results.",
    )
    p.add_argument("project", metavar="PROJECT", help="project file saved with session.save(...)")
    p.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="images: OME-Zarr/zarr directories or http(s) URLs, TIFF files, .npy files",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--outputs",
        nargs="+",
        metavar="NAME",
        default=["probabilities", "segmentation", "uncertainty"],
        choices=["probabilities", "segmentation", "uncertainty", "objects"],
        help="what to write (default: the first three; objects needs --objects-label)",
    )
    o = p.add_argument_group("objects (with --outputs objects; as Session.objects and ilastik's Thresholding)")
    o.add_argument("--objects-label", type=int, metavar="CLASS", help="the class whose objects are found (1..n)")
    o.add_argument("--threshold", type=float, default=0.5, help="probability from which a voxel is in an object")
    o.add_argument(
        "--low", type=float, metavar="P", help="hysteresis: objects grow from seeds down to this probability"
    )
    o.add_argument("--min-size", type=int, default=10, metavar="N", help="smallest object in voxels (default 10)")
    o.add_argument("--max-size", type=int, metavar="N", help="largest object in voxels (default: no limit)")
    o.add_argument("--smooth", type=float, default=1.0, metavar="SIGMA", help="Gaussian sigma in voxels (default 1)")
    o.add_argument("--split", action="store_true", help="separate touching objects")
    p.add_argument(
        "--format",
        choices=["zarr", "tiff"],
        default="zarr",
        help="OME-Zarr (default, block by block) or TIFF (computed in memory)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786) or scheduler JSON file; default: local threads",
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="start a local cluster with N worker processes instead of threads"
    )
    p.add_argument("--chunks", type=_chunks, metavar="N[,N...]", help="processing block shape (spatial)")
    p.add_argument("--channel-axis", type=int, metavar="AXIS", help="channel axis of the inputs (if not in metadata)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--zarr-format", type=int, choices=[2, 3], default=2, help="zarr format of the outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")

    d = sub.add_parser("demo", help="open the demo notebook in JupyterLab")
    d.add_argument(
        "folder",
        nargs="?",
        help="folder to copy the quickstart into (default ./ilastik-widget-demo; ~/ilastik-widget-demo when run "
        "inside a source checkout)",
    )
    d.add_argument("--no-browser", action="store_true", help="do not open a browser")
    d.add_argument("--port", type=int, default=None, metavar="P", help="port for JupyterLab")
    return parser


def _error(msg: str) -> int:
    print(f"ilastik-widget: error: {msg}", file=sys.stderr)
    return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 2000 else text[:1997] + "..."


def _predict(args) -> int:
    """``predict``: every failure is one line on stderr and exit code 1 (``--debug`` shows the traceback)."""
    try:
        return _run_predict(args)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if args.debug:
            raise
        return _error(
            f"unexpected {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback, and please "
            f"report it)"
        )


def _run_predict(args) -> int:
    from .io.project import ProjectError, load_model

    if not os.path.isfile(args.project):
        what = "is a directory, not a project file" if os.path.isdir(args.project) else "not found"
        return _error(f"project file {what}: {args.project}")
    try:
        model = load_model(args.project)
    except (ProjectError, OSError, ValueError, RuntimeError) as exc:
        return _error(f"cannot use project {args.project}: {_one_line(exc)}")
    from .io.batch import predict_batch
    from .io.sources import is_url, open_source

    objects = None
    if "objects" in args.outputs:
        if args.objects_label is None:
            return _error("--outputs objects needs --objects-label CLASS (the class whose objects are found)")
        keys = ("threshold", "low", "min_size", "max_size", "smooth", "split")
        objects = {"label": args.objects_label, **{k: getattr(args, k) for k in keys}}
        try:
            from .io.batch_objects import objects_params

            objects_params(objects, model.n_classes, model.ndim)
        except ValueError as exc:
            return _error(f"bad objects options: {_one_line(exc)}")

    sources = []
    for inp in args.inputs:
        if not is_url(inp) and not os.path.exists(inp):
            return _error(f"input not found: {inp}")
        try:
            sources.append(open_source(inp, channel_axis=args.channel_axis))
        except (ValueError, OSError, TypeError, KeyError, RuntimeError) as exc:
            return _error(f"cannot open input {inp}: {_one_line(exc)}")

    client = cluster = None
    try:
        if args.scheduler:
            from distributed import Client

            target = args.scheduler
            if os.path.isfile(target):
                client = Client(scheduler_file=target)
            else:
                client = Client(target, timeout="30s")
        elif args.workers:
            from distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0")
            client = Client(cluster)
    except Exception as exc:
        return _error(f"cannot connect to the Dask scheduler {args.scheduler or '(local cluster)'}: {_one_line(exc)}")
    try:
        results = predict_batch(
            model,
            sources,
            args.output,
            outputs=tuple(args.outputs),
            client=client,
            chunks=args.chunks,
            progress=not args.no_progress,
            format=args.format,
            overwrite=args.overwrite,
            zarr_format=args.zarr_format,
            objects=objects,
        )
    except FileExistsError as exc:
        return _error(_one_line(exc))
    except (ValueError, RuntimeError, OSError) as exc:
        return _error(f"prediction failed: {_one_line(exc)}")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    for r in results:
        written = ", ".join(
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in r.items() if k != "input"
        )
        print(f"{r['input']}: {written}")
    return EXIT_OK


def _demo(args) -> int:
    try:
        from .demo import main as demo_main
    except ImportError as exc:
        return _error(f"the demo is not available: {exc}")
    rc = demo_main(args)
    return int(rc or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ilastik-widget`` command line on ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit code: 0 success, 1 error (its message on stderr), 2 no command given, 130 interrupted. Bad usage,
    ``--help`` and ``--version`` end in SystemExit (code 2, 0 and 0), as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on bad usage
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "predict":
            return _predict(args)
        if args.command == "demo":
            return _demo(args)
    except KeyboardInterrupt:
        print("ilastik-widget: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
