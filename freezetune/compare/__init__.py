"""`freezetune compare`: the tuning study (strategies x seeds, baselines, statistics, report).

`compare(CompareOptions(...))` or `compare(output_dir=..., strategies=[...], ...)` (the CLI's options as keywords,
see freezetune/api.py) runs a study and returns its folder; `freezetune.study` calls it and returns the folder as
a `display.StudyFolder`, which Jupyter shows as the comparison table. The CLI builds the options from flags and
YAML (cli.py).
Importing this package is cheap: the report (pandas, matplotlib) and training load when a study runs.
"""

from __future__ import annotations

from freezetune.compare.options import CompareOptions
from freezetune.compare.study import compare

__all__ = ["CompareOptions", "compare"]
