"""The offline default, measured: `compare` on builtin:multilingual-e5-small x builtin:inews.

Runs configs/offline-default.yaml (full, freeze6, head, LSTM, TF-IDF; seeds 0,1,2; the notebook's
hyperparameters) and copies the report (markdown, HTML, PNGs, results.csv) to
benchmarks/results/offline-default/, with the machine and the command. Per strategy it gives test accuracy
and macro-F1 (best epoch chosen on validation), train wall time and samples/s, mean +- std over seeds.

    python benchmarks/offline_default.py [--seeds 0,1,2] [--strategies ...] [--work runs/offline-default]

Run it alone on the machine (it takes about an hour on 2 CPU cores). It resumes: rerunning after an
interruption continues with the runs not yet finished.
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
REPORT_FILES = ("report.md", "results.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="offline-default", help="a packaged config name or a YAML file")
    parser.add_argument("--seeds", help="override the config's seeds, e.g. 0,1")
    parser.add_argument("--strategies", help="override the config's strategies")
    parser.add_argument("--work", default=str(ROOT / "runs" / "offline-default"), help="the study folder (models stay here)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "offline-default"))
    args = parser.parse_args()

    values = load_yaml(args.config, valid=[f.name for f in dataclasses.fields(CompareOptions)])
    values.update({k: v for k, v in (("seeds", args.seeds), ("strategies", args.strategies)) if v})
    work = Path(args.work)
    options = CompareOptions(**values, output_dir=str(work), resume=work.exists())
    started = time.perf_counter()
    compare(options)
    minutes = (time.perf_counter() - started) / 60

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    for path in [*(work / name for name in REPORT_FILES), *work.glob("*.png")]:
        shutil.copy2(path, results / path.name)
    command = "python " + " ".join(["benchmarks/offline_default.py", *sys.argv[1:]])
    (results / "MACHINE.md").write_text(
        f"Command: `{command}`\n\nMachine: {describe_machine()}\n\n"
        f"This invocation took {minutes:.1f} minutes (runs finished earlier and resumed are not re-timed).\n",
        encoding="utf-8")
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
