"""``medjax-report DIR``: a multirun's table (mean ± sd over seeds per
variant) as Markdown and CSV, and a bar figure.

    medjax-train -m experiment=lesion_multistream model=cnn_small,multistream_small seed=0,1,2
    medjax-report runs/default/multirun --metrics auroc accuracy [--split test --evaluate]
"""

import argparse
import os
import subprocess
import sys

from medjax.cli.common import fail
from medjax.errors import MedjaxError


def _evaluate_missing(jobs, split: str) -> None:
    """``medjax-eval`` of the best checkpoint on ``split`` for every job
    without those metrics, one process each (as a user would run it)."""
    program = os.path.join(os.path.dirname(sys.executable), "medjax-eval")
    for job in jobs:
        if split in job.metrics:
            continue
        print(f"medjax-report: evaluating {job.run_dir} on {split}", flush=True)
        result = subprocess.run([program, f"run_dir={job.run_dir}", f"split={split}"],
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise SystemExit(result.stderr.strip().splitlines()[-1] if result.stderr
                             else f"medjax-eval failed on {job.run_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="medjax-report", description=__doc__.split("\n\n")[0].strip("`"))
    parser.add_argument("directory", help="a multirun directory (e.g. runs/<name>/multirun)")
    parser.add_argument("--metrics", nargs="+",
                        help="metrics to tabulate (default: the one that ranked checkpoints)")
    parser.add_argument("--split", default="validation",
                        help="validation (the best checkpoint's, from summary.json) or a "
                        "split evaluated by medjax-eval (eval.json), e.g. test")
    parser.add_argument("--evaluate", action="store_true",
                        help="run medjax-eval on SPLIT for jobs that lack its metrics")
    parser.add_argument("--out", help="where report.{md,csv,png} go (default: DIRECTORY)")
    args = parser.parse_args(argv)
    from medjax.engine import multirun_report

    try:
        jobs = multirun_report.collect(args.directory)
        if args.evaluate and args.split != "validation":
            _evaluate_missing(jobs, args.split)
        metrics = args.metrics or multirun_report.default_metrics(jobs)
        written = multirun_report.write_report(args.directory, metrics, args.split, args.out)
    except MedjaxError as error:
        fail("medjax-report", error)
    print(written["table"], end="")
    print("medjax-report: wrote " + ", ".join(written[k] for k in ("md", "csv", "png")))


if __name__ == "__main__":
    main()
