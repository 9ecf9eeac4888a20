"""What refitting the temperature on the served logits changes, on runs saved before it did (`--decision macro_f1`).

A run folded softmax(z / T + o) into its classifier, with T fitted on validation before the offsets o. Since
then `train` fits one more scale s on validation, (z / T + o) / s, which changes no label. This takes saved run
folders, predicts their validation and test splits once, refits s as training now does, and prints the test
ECE, NLL and Brier score of the raw logits z (recovered from the recorded T and o), of z / T, of the saved
served logits and of the refitted ones. A run saved after the change gives s = 1. For data with its own
validation split (as builtin:inews): a held-out fraction would depend on the seed that made it.

    python benchmarks/served_temperature.py runs/STUDY/runs/*seed*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import softmax

from freezetune.compare.study import SPLIT_SEED
from freezetune.data import LABEL, TEXT, load_splits
from freezetune.inference.classifier import TorchClassifier
from freezetune.models import load_classifier, load_tokenizer
from freezetune.posthoc.calibration import brier_score, expected_calibration_error, fit_temperature, negative_log_likelihood


def scores(logits: np.ndarray, labels: np.ndarray) -> str:
    probs = softmax(logits, axis=1)
    return (f"ECE {expected_calibration_error(probs, labels):.4f} NLL {negative_log_likelihood(logits, labels):.4f} "
            f"Brier {brier_score(probs, labels):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by freezetune train or compare")
    args = parser.parse_args()
    for run in args.runs:
        config, metrics = (json.loads((run / name).read_text()) for name in ("run_config.json", "metrics.json"))
        temperature = metrics["details"]["calibration"]["temperature"]
        offsets = np.asarray(metrics["details"]["decision"]["logit_offsets"])
        splits = load_splits(config["data"], config["text_column"], config["label_column"], SPLIT_SEED,
                             config["validation_fraction"])
        model = load_classifier(str(run), splits.label_names).eval()
        classifier = TorchClassifier(model, load_tokenizer(str(run)), 64, config["max_length"])
        (validation, validation_labels), (test, test_labels) = (
            (classifier.logits(frame[TEXT].tolist()), frame[LABEL].to_numpy()) for frame in (splits.validation, splits.test))
        scale = fit_temperature(validation, validation_labels)
        raw = (test - offsets) * temperature
        print(f"{run.parent.parent.name}/{run.name}: T {temperature:.3f}, refitted scale s {scale:.3f}, test rows {len(test)}")
        for name, logits in (("raw z", raw), ("z / T", raw / temperature), ("served (saved)", test),
                             ("served / s", test / scale)):
            print(f"  {name:15s} {scores(logits, test_labels)}")
        assert np.array_equal((test / scale).argmax(axis=1), test.argmax(axis=1)), "a positive scale changed a label"


if __name__ == "__main__":
    main()
