"""The `stepdistill` command: a table from subcommand to the function that does the work.

    stepdistill import-official ROOT --task cqa --out data/cqa
    stepdistill annotate CONFIG [--section.key value ...]
    stepdistill train CONFIG [--resume [--allow-config-change]] [--section.key value ...]
    stepdistill evaluate RUN_DIR_OR_CONFIG [--split test] [--checkpoint DIR] [--overwrite]
    stepdistill predict RUN_DIR_OR_GGUF --input FILE [--rationale] [--out FILE]
    stepdistill run CONFIG [--section.key value ...] [--plan]
    stepdistill kd-targets CONFIG [--from whitebox|annotations] [--out FILE]
    stepdistill report RUN_DIR [RUN_DIR ...] [--out DIR]
    stepdistill export RUN_DIR [--format gguf] [--quant f16,q8_0,q4_k_m] [--out DIR] [--overwrite]

No logic lives here: each handler parses its arguments and calls one function.

Exit codes: 0 done; 2 an error the message explains (bad config or data, busy run folder, disk full);
3 `annotate`/`run` left examples without a teacher answer (re-run to ask again); 75 training stopped
by SIGTERM or Ctrl-C after writing a checkpoint (`train CONFIG --resume` continues it).
"""

from __future__ import annotations

import argparse
import errno
import sys

from stepdistill.errors import StepDistillError
from stepdistill.threads import quiet_library_bars, sleep_idle_cpu_threads


def _config(args: argparse.Namespace):
    from stepdistill.config import load_config

    return load_config(args.config, args.overrides)


def cmd_import_official(args: argparse.Namespace) -> None:
    from stepdistill.data.official import import_official

    counts = import_official(args.root, args.task, args.out)
    print(", ".join(f"{split}: {n}" for split, n in counts.items()) + f" examples written to {args.out}")


def cmd_annotate(args: argparse.Namespace) -> None:
    from stepdistill.run import annotate_command

    annotate_command(_config(args))


def cmd_train(args: argparse.Namespace) -> None:
    from stepdistill.outcomes import train_line
    from stepdistill.train import train

    cfg = _config(args)
    print(train_line(train(cfg, resume=args.resume, allow_config_change=args.allow_config_change)))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from stepdistill.predict import evaluate_run

    evaluate_run(
        args.target, args.split, args.checkpoint, args.overrides, overwrite=args.overwrite
    )  # ends with its one line: accuracies and files written


def cmd_predict(args: argparse.Namespace) -> None:
    from stepdistill.outcomes import predict_line
    from stepdistill.predict import predict_file

    if args.run_dir.endswith(".gguf"):  # a student exported by `stepdistill export`
        from stepdistill.export.predict import predict_gguf

        path = predict_gguf(args.run_dir, args.input, out=args.out, rationale=args.rationale)
    else:
        path = predict_file(
            args.run_dir, args.input, out=args.out, rationale=args.rationale, checkpoint=args.checkpoint
        )
    print(predict_line(path))


def cmd_run(args: argparse.Namespace) -> None:
    if args.plan:
        from stepdistill.run_plan import plan

        print("\n".join(plan(_config(args))))
        return
    from stepdistill.run import run

    run(_config(args))


def cmd_kd_targets(args: argparse.Namespace) -> None:
    from stepdistill.kd_targets import kd_targets

    kd_targets(_config(args), source=args.source, out=args.out)


def cmd_report(args: argparse.Namespace) -> None:
    from stepdistill.report.build import build_report

    path = build_report(args.run_dirs, out=args.out)
    print(f"report: {path}")


def cmd_export(args: argparse.Namespace) -> None:
    from stepdistill.export.deploy import export_line, export_run

    deploy = export_run(
        args.run_dir, args.quant.split(","), out=args.out, overwrite=args.overwrite, split=args.split
    )
    print(export_line(deploy))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepdistill", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("import-official", help="convert the official distilling-step-by-step layout")
    s.add_argument("root", help="folder holding <task>/<task>_{train,valid,test}.json and <task>/llm/")
    s.add_argument("--task", required=True, choices=["cqa", "svamp", "esnli", "anli1"])
    s.add_argument("--out", required=True, help="folder for {train,valid,test}.jsonl")
    s.set_defaults(func=cmd_import_official)

    for name, func, helptext in [
        ("annotate", cmd_annotate, "label and explain a dataset with a teacher LLM"),
        ("train", cmd_train, "train a student"),
        ("run", cmd_run, "annotate, train, evaluate and report in one go"),
    ]:
        s = sub.add_parser(name, help=helptext)
        s.add_argument("config")
        if name == "run":
            s.add_argument(
                "--plan",
                action="store_true",
                help="print each stage and training of the run and whether it is done; run nothing",
            )
        if name == "train":
            s.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
            s.add_argument(
                "--allow-config-change",
                action="store_true",
                help="with --resume: accept changes to keys that cannot alter the result (e.g. eval.batch_size)",
            )
        s.set_defaults(func=func)

    s = sub.add_parser("evaluate", help="score a trained student on one or more splits")
    s.add_argument("target", help="a run folder (or a config whose run folder exists)")
    s.add_argument("--split", action="append", help="split to score (repeatable); default: the config's")
    s.add_argument("--checkpoint", help="checkpoint folder; default: the run's best")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="update the run's own metrics.json and predictions/ (default: write <run>/evaluation/)",
    )
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="label new inputs with a trained student")
    s.add_argument("run_dir", help="a run folder, or a .gguf file written by `stepdistill export`")
    s.add_argument("--input", required=True, help="JSONL/CSV/Parquet of task records")
    s.add_argument("--out", help="output JSONL; default: predictions-<input name>.jsonl in the run's folder")
    s.add_argument("--rationale", action="store_true", help="also generate a rationale")
    s.add_argument("--checkpoint")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("kd-targets", help="precompute top-k teacher targets for soft-target KD")
    s.add_argument("config")
    s.add_argument("--from", dest="source", default="whitebox", choices=["whitebox", "annotations"])
    s.add_argument("--out", help="output file; default: kd.topk_file or next to the training data")
    s.set_defaults(func=cmd_kd_targets)

    s = sub.add_parser("export", help="write the student as GGUF files, score each, add a model card")
    s.add_argument("run_dir", help="a training folder, or a `stepdistill run` folder (its best training)")
    s.add_argument("--format", default="gguf", choices=["gguf"], help="file format (GGUF: llama.cpp, Ollama)")
    s.add_argument("--quant", default="f16,q8_0,q4_k_m", help="comma-separated: f16, q8_0, q4_k_m, ...")
    s.add_argument("--out", help="folder for the files; default: <run_dir>/export")
    s.add_argument("--split", default="test", help="split to score the exported files on")
    s.add_argument("--overwrite", action="store_true", help="replace an existing export")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("report", help="build or combine reports from finished runs")
    s.add_argument("run_dirs", nargs="+")
    s.add_argument("--out", help="report folder; default: <first run>/report")
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    sleep_idle_cpu_threads()  # before torch loads: spinning OpenMP threads stall shared CPUs
    quiet_library_bars()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Everything after the known flags is a `--section.key value` override.
    args.overrides = rest
    if rest and args.command in ("import-official", "predict", "report", "export"):
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        args.func(args)
    except StepDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Every file is written to a temporary name and renamed, so the previous one is intact.
        where = f" writing {err.filename}" if err.filename else ""
        print(
            f"error: disk full{where} ({err.strerror}); earlier files are intact: free space and re-run",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
