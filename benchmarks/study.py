"""A packaged study, measured: `compare` with a config of `freezetune compare --list-configs`, report checked in.

    python benchmarks/study.py --config offline-default   # full, freeze6, head, LSTM, TF-IDF; 3 seeds
    python benchmarks/study.py --config strategies        # every strategy family under --lr-grid auto
    python benchmarks/study.py --config sweep             # freezeN at 0, 2, ..., 12
    python benchmarks/study.py --config lora              # full vs LoRA on every linear layer

The study runs in runs/CONFIG/ (models stay there, out of git); the report (markdown, PNGs, results.csv,
lr_selection.json) is copied to benchmarks/results/CONFIG/ with the machine and the command (MACHINE.md).
Run it alone on the machine (two PyTorch jobs at once run many times slower): it takes about an hour
(offline-default) to over an hour (strategies) on 2 CPU cores. It resumes: rerunning after an interruption
continues with the runs not yet finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

from machine import describe_machine

from freezetune.compare import CompareOptions, compare
from freezetune.configs import load_yaml

ROOT = Path(__file__).resolve().parent.parent
# report.html embeds the PNGs copied beside report.md: one copy of each figure is checked in, not two.
REPORT_FILES = ("report.md", "results.csv", "lr_selection.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="offline-default", help="a packaged config name or a YAML file")
    parser.add_argument("--seeds", help="override the config's seeds, e.g. 0,1")
    parser.add_argument("--strategies", help="override the config's strategies")
    parser.add_argument("--work", help="the study folder, models included (default runs/CONFIG)")
    parser.add_argument("--results", help="where the report is checked in (default benchmarks/results/CONFIG)")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="override any other option of the config, e.g. --set lr=1e-3 --set models=a,b (repeatable)")
    args = parser.parse_args()

    fields = [f.name for f in dataclasses.fields(CompareOptions)]
    values = load_yaml(args.config, valid=fields)
    values.update({k: v for k, v in (("seeds", args.seeds), ("strategies", args.strategies)) if v})
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            parser.error(f"--set {item!r}: give OPTION=VALUE with one of {', '.join(fields)}")
        values[key] = value
    name = Path(args.config).stem
    work = Path(args.work or ROOT / "runs" / name)
    options = CompareOptions(**values, output_dir=str(work), resume=work.exists())
    started = time.perf_counter()
    compare(options)
    minutes = (time.perf_counter() - started) / 60

    results = Path(args.results or ROOT / "benchmarks" / "results" / name)
    results.mkdir(parents=True, exist_ok=True)
    for path in [*(work / file for file in REPORT_FILES if (work / file).is_file()), *work.glob("*.png")]:
        shutil.copy2(path, results / path.name)
    command = "python " + " ".join(["benchmarks/study.py", *sys.argv[1:]])
    (results / "MACHINE.md").write_text(
        f"Command: `{command}`\n\nMachine: {describe_machine()}\n\n"
        f"This invocation took {minutes:.1f} minutes (runs finished earlier and resumed are not re-timed).\n",
        encoding="utf-8")
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
