"""How results show in Jupyter: a run as its per-epoch table, a study as its comparison table, progress as bars.

- `RunMetrics` is what `freezetune.train` returns: metrics.json's dict, unchanged, that displays as its per-epoch
  table (train and validation loss, validation accuracy and macro-F1, the best epoch marked with *) and the
  evaluation split's numbers.
- `StudyFolder` is what `freezetune.compare.compare` returns: the study's folder, a real `pathlib.Path`, that displays
  as one row per strategy (accuracy and macro-F1 mean ± std over seeds, trainable parameters, seconds), read
  from the folder's results.csv with the report's own `tables.summary_frame`.
- `side_by_side({"full": run, "freeze6": other})` puts several runs' epochs in one table, as the reference
  notebook's last table does.

Each has `_repr_html_` (Jupyter), `_repr_markdown_` and a plain-text form. Every value is HTML-escaped: label
names, data notes and paths come from the user's data. Nothing here imports matplotlib (compare/plots.py draws
without pyplot): displaying a result must not change a notebook's plotting backend.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path

from .layout import OPTIONS_FILE

EPOCH_HEADER = ["epoch", "train loss", "validation loss", "accuracy", "macro-F1"]
STUDY_HEADER = ["strategy", "seeds", "accuracy", "macro-F1", "trainable params", "train time (s)"]
BEST_MARK = " *"
STYLE = "border-collapse:collapse;margin:0.5em 0"


class Displayed:
    """A mixin: `_blocks()` says what to show as ("p", text) and ("table", header, rows, bold row indices)
    blocks; this class renders them for Jupyter. `_blocks()` returns None when there is nothing to show."""

    def _blocks(self) -> list[tuple] | None:
        raise NotImplementedError

    def _repr_html_(self) -> str | None:
        blocks = self._blocks()
        return None if blocks is None else to_html(blocks)

    def _repr_markdown_(self) -> str | None:
        blocks = self._blocks()
        return None if blocks is None else to_markdown(blocks)


class RunMetrics(Displayed, dict):
    """metrics.json's content (a plain dict to every reader) that displays as the run's per-epoch table."""

    def _blocks(self) -> list[tuple]:
        return run_blocks(self)

    def __repr__(self) -> str:  # not the dict: it holds every evaluation example's probabilities
        return to_text(self._blocks())


class StudyFolder(Displayed, type(Path())):
    """A study's folder (a `pathlib.Path`: `folder / "report.md"` and comparisons with paths work as before)
    that displays as the study's comparison table."""

    def summary(self):
        """The report's per-strategy summary (a DataFrame), computed by `tables.summary_frame` from results.csv."""
        import pandas as pd

        from .compare.tables import summary_frame

        return summary_frame(pd.read_csv(self / "results.csv"), label_names=[])

    def runs(self) -> dict[str, RunMetrics]:
        """Every finished run of the study, by its folder under runs/ (e.g. `full-seed0`; with several models
        `MODEL/full-seed0`)."""
        from .layout import METRICS_FILE

        runs = self / "runs"
        folders = sorted([*runs.glob(f"*/{METRICS_FILE}"), *runs.glob(f"*/*/{METRICS_FILE}")])
        return {path.parent.relative_to(runs).as_posix(): RunMetrics(json.loads(path.read_text(encoding="utf-8")))
                for path in folders}

    def _blocks(self) -> list[tuple] | None:
        if not (self / "results.csv").is_file():  # a path derived from the study (`study / "runs"`), say
            return None
        return study_blocks(self, self.summary())


class SideBySide(Displayed):
    """Several runs in one table (see `side_by_side`)."""

    def __init__(self, runs: Mapping[str, Mapping]):
        self.runs = dict(runs)

    def _blocks(self) -> list[tuple]:
        return side_by_side_blocks(self.runs)

    def __repr__(self) -> str:
        return to_text(self._blocks())


def side_by_side(runs: Mapping[str, Mapping]) -> SideBySide:
    """`{name: metrics}` (what `freezetune.train` returns, or metrics.json read back) as one table: each run's
    epochs, then each run's evaluation numbers and cost."""
    if not isinstance(runs, Mapping) or not all(isinstance(m, Mapping) for m in runs.values()):
        from .errors import UserError

        raise UserError("side_by_side takes a mapping of names to runs' metrics, e.g. {'full': full, 'freeze6': frozen}")
    return SideBySide(runs)


# --- what each result shows ----------------------------------------------------------------------------------

def run_blocks(metrics: Mapping) -> list[tuple]:
    """A run's headline, its data notes and per-class F1, and its per-epoch table closed by the evaluation row."""
    split = metrics.get("evaluation_split", "evaluation")
    evaluation = metrics.get("evaluation") or {}
    random_init = " - RANDOM INIT, not pretrained" if metrics.get("init") == "random" else ""
    headline = (f"{metrics.get('strategy', 'run')}: best epoch {metrics.get('best_epoch', '—')} by validation "
                f"{metrics.get('selection_metric') or 'accuracy'} (*); {split}: accuracy {_num(evaluation.get('accuracy'))}, "
                f"macro-F1 {_num(evaluation.get('macro_f1'))}; {_count(metrics.get('trainable_params'))} of "
                f"{_count(metrics.get('total_params'))} parameters trained in {_num(metrics.get('train_seconds'), 1)} s"
                f"{random_init}")
    blocks = [("p", headline)]
    blocks += [("p", f"Data note: {note}") for note in metrics.get("data_notes") or []]
    per_class = evaluation.get("per_class") or {}
    if per_class:
        blocks.append(("p", f"{split} F1 per class: " + ", ".join(f"{name} {_num(c.get('f1'))}" for name, c in per_class.items())))
    rows, bold = _epoch_rows(metrics)
    rows.append([f"{split} (best epoch)", "", "", _num(evaluation.get("accuracy")), _num(evaluation.get("macro_f1"))])
    blocks.append(("table", EPOCH_HEADER, rows, bold))
    return blocks


def _epoch_rows(metrics: Mapping, first: list | None = None) -> tuple[list[list], set[int]]:
    """One row per epoch (validation numbers), the best one's epoch marked; `first`: cells put before each row."""
    rows, bold = [], set()
    for epoch in metrics.get("epochs") or []:
        best = epoch.get("epoch") == metrics.get("best_epoch")
        if best:
            bold.add(len(rows))
        rows.append([*(first or []), f"{epoch.get('epoch')}{BEST_MARK if best else ''}", _num(epoch.get("train_loss")),
                     _num(epoch.get("eval_loss")), _num(epoch.get("accuracy")), _num(epoch.get("macro_f1"))])
    return rows, bold


def side_by_side_blocks(runs: Mapping[str, Mapping]) -> list[tuple]:
    epochs, bold = [], set()
    for name, metrics in runs.items():
        rows, best = _epoch_rows(metrics, first=[name])
        bold |= {len(epochs) + i for i in best}
        epochs += rows
    splits = sorted({m.get("evaluation_split", "evaluation") for m in runs.values()})
    split = splits[0] if len(splits) == 1 else "evaluation"
    totals = [[name, _num((m.get("evaluation") or {}).get("accuracy")), _num((m.get("evaluation") or {}).get("macro_f1")),
               _count(m.get("trainable_params")), _num(m.get("train_seconds"), 1)] for name, m in runs.items()]
    return [("p", "Validation numbers per epoch (* = best epoch, the one each run keeps)"),
            ("table", ["run", *EPOCH_HEADER], epochs, bold),
            ("p", f"The kept epoch on the {split} split"),
            ("table", ["run", "accuracy", "macro-F1", "trainable params", "train time (s)"], totals, set())]


def study_blocks(folder: Path, summary) -> list[tuple]:
    """The study's settings (compare.json), its summary table, and where the whole report is."""
    record_file = folder / OPTIONS_FILE
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    split = _evaluation_split(folder)
    models = record.get("models") or [record.get("model", "?")]  # several: compare --models
    about = (f"Study {folder}: model{'s' if len(models) > 1 else ''} {', '.join(models)}, "
             f"data {record.get('data', '?')}, seeds {', '.join(map(str, record.get('seeds', [])))}; {split} split, "
             "mean ± std over seeds. "
             f"The whole report: {folder / 'report.html'} (or report.md).")
    # A multi-model study's rows name their model (a baseline's is empty): MODEL/STRATEGY.
    rows = [[f"{r['model']}/{r['strategy']}" if isinstance(r.get("model"), str) else r["strategy"], int(r["seeds"]),
             _pm(r["accuracy_mean"], r["accuracy_std"]), _pm(r["macro_f1_mean"], r["macro_f1_std"]), _count(r["trainable_params"]),
             _pm(r["train_seconds_mean"], r["train_seconds_std"], 1)] for _, r in summary.iterrows()]
    return [("p", about), ("table", STUDY_HEADER, rows, set())]


def _evaluation_split(folder: Path) -> str:
    import pandas as pd

    names = pd.read_csv(folder / "results.csv", usecols=["evaluation_split"])["evaluation_split"].unique()
    return str(names[0]) if len(names) == 1 else "evaluation"


def _num(value, digits: int = 4) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"  # value != value: NaN


def _count(value) -> str:
    return "—" if value is None else f"{int(value):,}"


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# --- rendering -----------------------------------------------------------------------------------------------

def to_html(blocks: list[tuple]) -> str:
    esc = html.escape
    out = []
    for kind, *rest in blocks:
        if kind == "p":
            out.append(f"<p>{esc(str(rest[0]))}</p>")
            continue
        header, rows, bold = rest
        head = "".join(f'<th style="text-align:right">{esc(str(h))}</th>' for h in header)
        body = "".join(
            ("<tr style=\"font-weight:bold\">" if i in bold else "<tr>")
            + "".join(f'<td style="text-align:right">{esc(str(v))}</td>' for v in row) + "</tr>"
            for i, row in enumerate(rows))
        out.append(f'<table style="{STYLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return '<div class="freezetune">' + "".join(out) + "</div>"


def to_markdown(blocks: list[tuple]) -> str:
    """Markdown with every text HTML-escaped (markdown renderers pass raw HTML through), as the report does."""
    esc = lambda v: html.escape(str(v), quote=False)  # noqa: E731
    cell = lambda v: esc(v).replace("|", "\\|")  # noqa: E731
    out = []
    for kind, *rest in blocks:
        if kind == "p":
            out.append(esc(rest[0]))
            continue
        header, rows, _ = rest
        out.append("\n".join(["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
                             + ["| " + " | ".join(map(cell, row)) + " |" for row in rows]))
    return "\n\n".join(out) + "\n"


def to_text(blocks: list[tuple]) -> str:
    """Plain text for a terminal: paragraphs, and tables with aligned columns."""
    out = []
    for kind, *rest in blocks:
        if kind == "p":
            out.append(str(rest[0]))
            continue
        header, rows, _ = rest
        table = [list(map(str, header))] + [list(map(str, row)) for row in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        out += ["  ".join(value.rjust(width) for value, width in zip(row, widths)) for row in table]
    return "\n".join(out)


# --- progress ------------------------------------------------------------------------------------------------
