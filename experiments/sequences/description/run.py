"""Automatic description of phantom slices: a CNN-LSTM captioner's accuracy per
field and BLEU-4, greedy against beam search, over seeds (see README.md here).

    PYTHONPATH=$PWD python experiments/sequences/description/run.py [--init transfer]
    PYTHONPATH=$PWD python experiments/sequences/description/run.py --init scratch --steps 1000

``--init transfer`` (the default) first trains the transfer source once: the
main job's classifier (``cnn_small``, lesion vs healthy on the same slices) with
the captioner's backbone widths, ``--source-steps`` steps (runs/description_transfer/source);
each seed's captioner then starts its ``backbone`` from that run's
(``transfer.mode=finetune``: every layer trains, the backbone at 0.1 x the lr).
``--init scratch`` starts from random weights (runs/description).
Each seed is ``medjax-train experiment=describe_lesions`` with the sizes below
(<runs>/seed<k>); its last checkpoint is then scored on the 500 test
slices three times, decoding greedily and by beam search (width 3, ranking raw
summed log-probabilities, and with length penalty 1), in this process through
``evaluate_checkpoint`` with the task's ``decoding`` replaced (medjax-eval
scores a run with its own task options). ``--reuse`` scores runs already there.
The trivial baseline writes the training split's most common finding for every
slice. Writes ``results_<init>.json``, ``scores_<init>.png`` and
``examples_<init>.png`` here and prints the README's table.
"""

import collections
import dataclasses
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runner import arguments, bar_plot, mean_sd, train

# Sized for about 25 minutes of a shared 2-core CPU (see the README): a narrow
# backbone and a 64-unit LSTM on batches of 16 of the 64 x 64 slices.
WIDTHS = "model.widths=[8,16,32]"
SIZES = [WIDTHS, "model.features=64", "trainer.progress=false"]
# The transfer source: the main job (medjax-train's defaults: cnn_small, lesion
# vs healthy on the 4000 training slices) with the captioner's backbone widths
# and batch, so its `backbone` subtree has the captioner's shapes.
SOURCE = ["+" + WIDTHS, "data.batch_size=16", "trainer.progress=false"]
# name: (strategy, beam width, length penalty)
DECODINGS = {
    "greedy": ("greedy", 1, 0.0),
    "beam": ("beam", 3, 0.0),
    "beam_norm": ("beam", 3, 1.0),
}
METRICS = (
    "exact_match",
    "presence_accuracy",
    "count_accuracy",
    "type_accuracy",
    "size_accuracy",
    "size_within_one_bin",
    "bleu4",
    "well_formed",
)


def evaluate_decodings(run_dir: str) -> dict[str, dict]:
    """Test metrics of the last checkpoint of ``run_dir`` for each decoding
    (the best by validation exact match is, early on, the checkpoint that says
    "no lesion" everywhere: the prior scores 0.47 there)."""
    from medjax.cli.common import run_config
    from medjax.config.run import build_run
    from medjax.engine.evaluate import evaluate_checkpoint

    cfg = run_config("description study", run_dir)
    task, model, tx, data, *_ = build_run(cfg)
    scores = {}
    for name, (strategy, width, penalty) in DECODINGS.items():
        decoded = dataclasses.replace(
            task, decoding=strategy, beam_width=width, length_penalty=penalty
        )
        result = evaluate_checkpoint(
            task=decoded,
            model=model,
            tx=tx,
            data=data,
            run_dir=run_dir,
            split="test",
            checkpoint="latest",
            seed=cfg.seed,
            best_metric=cfg.trainer.best_metric,
            best_mode=cfg.trainer.best_mode,
        )
        scores[name] = {**result["metrics"], "step": result["step"]}
        figure = os.path.join(
            run_dir, "figures", f"test_step_{result['step']:06d}_findings.png"
        )
        shutil.copy(figure, os.path.join(run_dir, f"test_findings_{name}.png"))
    return scores


def most_common_finding_baseline() -> dict:
    """Scores of writing the training split's most common finding everywhere."""
    from medjax.data import pipeline
    from medjax.data.datasets.phantoms import phantoms
    from medjax.tasks.description import DescriptionTask
    from medjax.tasks.description.scores import description_scores

    data = phantoms(image_size=64)
    task = DescriptionTask().configure(data)
    keys = (task.types_key, task.radii_key, task.valid_key)

    def tokens(split):
        source = data.source(split)
        batch = pipeline.read_examples(source, range(len(source)), data.convert, keys)
        return np.asarray(task.finding_tokens(batch))

    common = collections.Counter(map(tuple, tokens("train"))).most_common(1)[0][0]
    truth = tokens("test")
    result = description_scores(task.coder, truth, np.tile(common, (len(truth), 1)))
    return {**result, "finding": task.coder.text(common)}


def main() -> None:
    parser = arguments(__doc__, "", {"captioner": None}, steps=None)
    parser.add_argument("--init", choices=("transfer", "scratch"), default="transfer")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="captioner steps (1000 scratch, 600 transfer)",
    )
    parser.add_argument("--source-steps", type=int, default=600)
    parser.add_argument(
        "--name",
        default=None,
        help="suffix of the files written here (default: --init)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate runs already trained into --runs instead of training again",
    )
    args = parser.parse_args()
    transfer = args.init == "transfer"
    args.runs = args.runs or (
        "runs/description_transfer" if transfer else "runs/description"
    )
    args.steps = args.steps or (600 if transfer else 1000)
    args.name = args.name or args.init
    every = max(1, args.steps // 2)
    results, init, source = [], [], None
    if transfer:
        source_dir = os.path.join(args.runs, "source")
        if args.reuse and os.path.isfile(os.path.join(source_dir, "summary.json")):
            with open(os.path.join(source_dir, "study_train.json")) as f:
                summary = json.load(f)
        else:
            summary = train(
                [
                    *SOURCE,
                    f"trainer.max_steps={args.source_steps}",
                    f"trainer.eval_every={args.source_steps}",
                    f"trainer.checkpoint_every={args.source_steps}",
                ],
                source_dir,
            )
            with open(os.path.join(source_dir, "study_train.json"), "w") as f:
                json.dump(summary, f, indent=2)
        source = {
            "run_dir": source_dir,
            "steps": args.source_steps,
            "validation": summary["final"]["validation"],
            "parameters": summary["parameters"],
            "wall_seconds": summary["wall_seconds"],
        }
        print({"source": source}, flush=True)
        init = ["transfer.mode=finetune", f"transfer.checkpoint={source_dir}"]
    for seed in args.seeds:
        run_dir = os.path.join(args.runs, f"seed{seed}")
        saved = os.path.join(run_dir, "study_train.json")
        if args.reuse and os.path.isfile(os.path.join(run_dir, "summary.json")):
            with open(
                saved
                if os.path.isfile(saved)
                else os.path.join(run_dir, "summary.json")
            ) as f:
                summary = json.load(f)
            for decoding, metrics in evaluate_decodings(run_dir).items():
                results.append(
                    {
                        "variant": decoding,
                        "seed": seed,
                        "run_dir": run_dir,
                        **metrics,
                        "parameters": summary.get("parameters"),
                        "wall_seconds": summary.get("wall_seconds"),
                    }
                )
            continue
        summary = train(
            [
                "experiment=describe_lesions",
                f"seed={seed}",
                *SIZES,
                *init,
                f"trainer.max_steps={args.steps}",
                f"trainer.eval_every={every}",
                f"trainer.checkpoint_every={every}",
            ],
            run_dir,
        )
        with open(saved, "w") as f:
            json.dump(summary, f, indent=2)
        for decoding, metrics in evaluate_decodings(run_dir).items():
            row = {
                "variant": decoding,
                "seed": seed,
                "run_dir": run_dir,
                **metrics,
                "parameters": summary["parameters"],
                "wall_seconds": summary["wall_seconds"],
            }
            print(
                {k: row[k] for k in ("variant", "seed", "exact_match", "bleu4")},
                flush=True,
            )
            results.append(row)
    baseline = most_common_finding_baseline()
    with open(os.path.join(HERE, f"results_{args.name}.json"), "w") as f:
        json.dump(
            {
                "runs": results,
                "baseline": baseline,
                "sizes": SIZES + init,
                "steps": args.steps,
                "source": source,
            },
            f,
            indent=2,
        )
    first = os.path.join(args.runs, f"seed{args.seeds[0]}", "test_findings_greedy.png")
    shutil.copy(first, os.path.join(HERE, f"examples_{args.name}.png"))
    names = {
        "greedy": "greedy",
        "beam": "beam (width 3)",
        "beam_norm": "beam (width 3, length penalty 1)",
    }
    bar_plot(
        results,
        names,
        ("exact_match", "type_accuracy", "size_accuracy", "bleu4"),
        os.path.join(HERE, f"scores_{args.name}.png"),
        f"captioner ({args.init}), 500 test slices",
        ylim=(0, 1),
    )
    print("| decoding | " + " | ".join(METRICS) + " |")
    print("| --- |" + " ---: |" * len(METRICS))
    for variant, name in names.items():
        rows = [r for r in results if r["variant"] == variant]
        print(
            f"| {name} | "
            + " | ".join(mean_sd([r[m] for r in rows]) for m in METRICS)
            + " |"
        )
    print(
        f"| most common finding ({baseline['finding']}) | "
        + " | ".join(f"{baseline[m]:.3f}" for m in METRICS)
        + " |"
    )


if __name__ == "__main__":
    main()
