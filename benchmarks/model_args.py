"""The model a benchmark script runs: the shipped weights by default, other weights, or an untrained
preset (for timing, where the pictures do not matter). One place, so every script offers the same
flags and seeds an untrained model the same way."""

from __future__ import annotations

import argparse

import torch

from livetok.engine.checkpoint import load_default, load_weights
from livetok.engine.config import PRESETS
from livetok.engine.model import Tokenizer


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--weights", default=None, help="default: the shipped model")
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS),
                    help="an untrained model of this preset instead of the weights (timing only)")


def model_from_args(a: argparse.Namespace) -> Tokenizer:
    if a.preset is not None:
        torch.manual_seed(0)  # the same untrained weights on every run, so runs compare
        return Tokenizer(PRESETS[a.preset]).eval()
    return load_weights(a.weights) if a.weights else load_default()
