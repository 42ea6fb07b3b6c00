"""``blastscope compare``: train every chosen model on one shared split and budget, then write one report."""

from __future__ import annotations

import argparse
from pathlib import Path

from blastscope.cli._arguments import image_size, refer_error, threshold_choice, whole_number
from blastscope.cli._interrupt import Interrupted


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` command and its options.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The ``blastscope`` parser's subcommands.
    """
    parser = subparsers.add_parser(
        "compare",
        help="train and compare models on one shared split; write report.html/.md and results.csv/.json",
        description=(
            "Train every chosen model on the same subject-level split with the same budget, evaluate each on the same "
            "test cells (95% bootstrap CIs over subjects), and write OUT/report.html (self-contained), OUT/report.md, "
            "OUT/results.csv and OUT/results.json. Without --data it runs on built-in synthetic cells. Finished runs "
            "under OUT/runs are reused, so an interrupted comparison continues where it stopped. Each run is scored "
            "at the operating point stored in it unless --threshold chooses a new one, which is then stored there."
        ),
    )
    parser.add_argument("--data", type=Path, help="dataset folder or CSV manifest (default: synthetic demo cells)")
    parser.add_argument("--models", help="comma-separated model names (default: all 8, see `blastscope models`)")
    parser.add_argument(
        "--cv",
        type=whole_number(
            "a number of folds", "5", minimum=3, why=" (each fold is tested once, another validates, the rest train)"
        ),
        metavar="K",
        help="K-fold subject-grouped cross-validation (mean ± sd): fold i tests, fold i+1 validates, the other K-2 "
        "train (60/20/20 at K=5, a third each at K=3)",
    )
    parser.add_argument("--out", type=Path, default=Path("blastscope-out"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--budget",
        choices=("demo", "standard", "full"),
        help="preset of image size, epochs, batch and bootstrap (default: demo without --data, standard with)",
    )
    epochs = whole_number("a number of epochs", "5", minimum=0)
    parser.add_argument("--epochs-frozen", type=epochs, metavar="N", help="epochs with the backbone frozen (phase 1)")
    parser.add_argument(
        "--epochs-finetune", type=epochs, metavar="N", help="epochs fine-tuning the last stages (phase 2)"
    )
    parser.add_argument(
        "--image-size",
        type=image_size,
        metavar="PX",
        help="shared input size (raised to a model's minimum)",
    )
    parser.add_argument(
        "--batch-size", type=whole_number("a batch size", "32"), metavar="N", help="training batch size"
    )
    parser.add_argument(
        "--bootstrap",
        type=whole_number("a number of resamples", "1000", minimum=0),
        metavar="N",
        help="bootstrap resamples for the 95%% CIs",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split, training and synthetic data (default: 0)"
    )
    parser.add_argument(
        "--pretrained",
        choices=("auto", "none"),
        default="auto",
        help="auto: best weights reachable offline, else random init; none: random init for all (default: auto)",
    )
    parser.add_argument(
        "--threshold",
        type=threshold_choice,
        metavar="val|X",
        help=(
            "choose a new operating point in each run and store it there (as `blastscope evaluate --threshold` does, "
            "recorded as chosen by compare): 'val' picks the threshold on p(positive) with the best weighted F1 on the "
            "run's validation split, a number X in [0, 1] is taken as given; either way a temperature is fitted on "
            "validation (default: score each run at the operating point stored in it, changing nothing)"
        ),
    )
    parser.add_argument(
        "--refer-error",
        type=refer_error,
        metavar="E",
        help="also choose each run's refer band on validation: cells inside it are flagged 'uncertain - refer', "
        "the rest called with at most this error rate there (e.g. 0.05); stored with the operating point",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="also score every model with test-time augmentation (its 8 flips and 90-degree rotations averaged) at the "
        "same threshold, shown beside the plain numbers as 'with TTA (8 views)'",
    )
    parser.add_argument(
        "--rank-by",
        default="weighted_f1",
        metavar="METRIC",
        help="rank the models by weighted_f1 (the C-NMC 2019 metric, default), accuracy, roc_auc, sensitivity, "
        "specificity, balanced_accuracy, macro_f1, subject_accuracy or subject_balanced_accuracy (one call per test "
        "subject from the mean probability of their cells); with --tta also each with _tta, e.g. weighted_f1_tta. A "
        "model without that score (e.g. subject_accuracy without subject ids) ranks last without a rank, said in the "
        "report. No second metric breaks ties: models tied on it share a rank, stay in the --models order, and the "
        "ranking says so",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.add_argument(
        "--positive-class",
        metavar="NAME",
        help="the class sensitivity and thresholds are about (default: read from the class names, e.g. ALL)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``blastscope compare`` with the parsed options and print where the report went.

    Parameters
    ----------
    args : argparse.Namespace
        The options :func:`register` defines.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    BlastscopeError
        For a bad request (unknown models, a bad ``--rank-by``, ...); unusable budget numbers, fold counts,
        thresholds and refer error rates are refused by argparse before.
    """
    from blastscope.workflows.compare import DEFAULT_MODELS, CompareConfig, run_compare

    models = tuple(name.strip() for name in args.models.split(",") if name.strip()) if args.models else DEFAULT_MODELS
    config = CompareConfig(
        data=args.data,
        models=models,
        out=args.out,
        budget=args.budget,
        cv=args.cv,
        epochs_frozen=args.epochs_frozen,
        epochs_finetune=args.epochs_finetune,
        image_size=args.image_size,
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        seed=args.seed,
        pretrained=args.pretrained,
        threshold=args.threshold,
        refer_error=args.refer_error,
        positive_class=args.positive_class,
        tta=args.tta,
        rank_by=args.rank_by,
        progress=args.progress,
    )
    try:
        files = run_compare(config)
    except KeyboardInterrupt:  # trained_run picks up where this stopped: say so, not `train --resume`
        raise Interrupted(
            f"running the same command again (the same --out {args.out}) reuses the runs finished in "
            f"{args.out / 'runs'} and resumes the interrupted one"
        ) from None
    print(f"report: {files.html}")
    print(f"        {files.markdown}")
    print(f"results: {files.csv}, {files.json}")
    return 0
