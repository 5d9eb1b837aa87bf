"""`sswe-node model stats`: add trust statistics to an already packaged model (no retraining)."""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "model maintenance: `model stats` adds OOD and scanner-alignment statistics to a package"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = sub.add_parser(
        "stats",
        help="compute the training frames' statistics from a dataset into model.toml [trust]",
    )
    stats.add_argument("--model", required=True, help="model name or package folder")
    stats.add_argument("--dataset", required=True, help="the model's training dataset file")
    stats.add_argument("--models-dir", default="models", help="folder of named models")


def run(args: argparse.Namespace) -> int:
    """Run ``sswe-node model stats``."""
    from sswe_node.model import resolve_model_dir
    from training.package import add_statistics

    command = "sswe-node " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    manifest = add_statistics(args.model, args.dataset, models_dir=args.models_dir, command=command)
    stats = manifest.trust_stats(resolve_model_dir(args.model, args.models_dir))
    assert stats is not None
    print(
        f"{manifest.name}: trust statistics from {stats.source['frames']} training frames of "
        f"{args.dataset} (same split as training: {stats.source['matches_training_split']}); "
        f"scanners {', '.join(stats.scanners)}"
    )
    return 0
