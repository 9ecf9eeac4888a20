"""examples/quickstart.ipynb run headless in a real kernel on the tiny model, and the keyword API and rich display
it relies on (freezetune/api.py, freezetune/display.py)."""

from __future__ import annotations

import ast
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

import freezetune
from freezetune.cli import main
from freezetune.compare import CompareOptions
from freezetune.display import RunMetrics, StudyFolder, side_by_side
from freezetune.errors import UserError

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"
EPOCH_COLUMNS = ["epoch", "train loss", "validation loss", "accuracy", "macro-F1"]
STUDY_COLUMNS = ["strategy", "seeds", "accuracy", "macro-F1", "trainable params", "train time (s)"]


class Tables(HTMLParser):
    """The text of every table cell in an HTML fragment: tables -> rows -> cells."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


# --- the notebook ----------------------------------------------------------------------------------------------

# The module's tests share module fixtures that take seconds: one worker runs them all, so they are built once.
pytestmark = pytest.mark.xdist_group("notebook")


@pytest.fixture(scope="module")
def executed(tiny_bert, tiny_csv_dir, tmp_path_factory):
    """The notebook executed with its parameters cell replaced: the tiny model and data, 1 epoch, freeze1."""
    nbformat = pytest.importorskip("nbformat", reason="needs the test extra: pip install 'freezetune[test]'")
    nbclient = pytest.importorskip("nbclient", reason="needs the test extra: pip install 'freezetune[test]'")
    pytest.importorskip("ipykernel", reason="needs the test extra: pip install 'freezetune[test]'")
    work = tmp_path_factory.mktemp("notebook")
    parameters = {"MODEL": str(tiny_bert), "DATA": str(tiny_csv_dir), "EPOCHS": 1, "OUTPUT": str(work / "runs"),
                  "FROZEN": "freeze1", "SEEDS": [0], "OPTIONS": {"batch_size": 32, "max_length": 16}}
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body for t in node.targets}
    assert assigned == set(parameters), "the test sets every parameter the notebook has"
    cell.source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    # The kernel is a fresh process: offline, one thread (as the other tests), the tests' temporary folder as cwd.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(work)}})
    client.execute(env=env)
    return {tag: c for c in notebook.cells for tag in c.metadata.get("tags", [])}, work / "runs"


def _result_html(cell) -> str:
    (result,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    return result.data["text/html"]


def test_notebook_runs_without_errors_and_writes_its_folders(executed):
    cells, runs = executed
    errors = [o for c in cells.values() for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    for folder in ("full", "freeze1", "study/runs/full-seed0", "study/runs/freeze1-seed0"):
        assert (runs / folder / "metrics.json").is_file(), folder
    assert (runs / "study" / "report.html").is_file()
    printed = "".join(o.get("text", "") for o in cells["tokenize"].outputs)
    assert "input_ids" in printed and "attention_mask" in printed and "[CLS]" in printed


def test_notebook_shows_each_run_as_its_epoch_table(executed):
    cells, runs = executed
    for tag, strategy in (("train-full", "full"), ("train-frozen", "freeze1")):
        html = _result_html(cells[tag])
        (table,) = Tables(html).tables
        metrics = json.loads((runs / strategy / "metrics.json").read_text(encoding="utf-8"))
        assert table[0] == EPOCH_COLUMNS
        assert [row[0] for row in table[1:]] == ["1 *", "test (best epoch)"]  # 1 epoch, the best; then test
        assert table[-1][3:] == [f"{metrics['evaluation']['accuracy']:.4f}", f"{metrics['evaluation']['macro_f1']:.4f}"]
        assert html.lstrip().startswith('<div class="freezetune"><p>' + strategy + ":")


def test_notebook_compares_the_runs_and_shows_the_study(executed):
    cells, _ = executed
    epochs, totals = Tables(_result_html(cells["side-by-side"])).tables
    assert [row[:2] for row in epochs[1:]] == [["full", "1 *"], ["freeze1", "1 *"]]
    assert [row[0] for row in totals[1:]] == ["full", "freeze1"]
    (summary,) = Tables(_result_html(cells["study"])).tables
    assert summary[0] == STUDY_COLUMNS
    assert [row[:2] for row in summary[1:]] == [["full", "1"], ["freeze1", "1"]]
    images = [o for o in cells["report"].outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 2


# --- the keyword API -------------------------------------------------------------------------------------------

def test_an_unknown_keyword_names_the_close_option(tmp_path):
    with pytest.raises(UserError, match=r"unknown option 'epoch': did you mean epochs\?"):
        freezetune.train(output_dir=str(tmp_path / "out"), epoch=1)
    with pytest.raises(UserError, match=r"unknown option 'seed': did you mean seeds\?"):
        freezetune.study(output_dir=str(tmp_path / "study"), seed=1)
    with pytest.raises(UserError, match="unknown option 'qqq': the options are model, data,"):
        freezetune.train(output_dir=str(tmp_path / "out"), qqq=1)
    assert not (tmp_path / "out").exists() and not (tmp_path / "study").exists()


@pytest.mark.parametrize("flags, keywords", [
    (["--epochs", "0"], {"epochs": 0}),
    (["--validation-fraction", "1.5"], {"validation_fraction": 1.5}),
    (["--strategy", "freeze-x"], {"strategy": "freeze-x"}),
    (["--freeze", "nope"], {"freeze": "nope"}),  # the older spelling, as the CLI takes it
])
def test_a_bad_value_is_the_clis_one_line_error(flags, keywords, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["train", "--output-dir", out, *flags]) == 2
    cli_line = capsys.readouterr().err.strip()
    with pytest.raises(UserError) as raised:
        freezetune.train(output_dir=out, **keywords)
    assert cli_line == f"freezetune: error: {raised.value}"
    assert "\n" not in str(raised.value) and not Path(out).exists()


def test_a_study_keyword_error_is_the_clis_too(tmp_path, capsys):
    out = str(tmp_path / "study")
    assert main(["compare", "--output-dir", out, "--lstm-lr", "0"]) == 2
    cli_line = capsys.readouterr().err.strip()
    with pytest.raises(UserError) as raised:
        freezetune.study(output_dir=out, lstm_lr=0)
    assert cli_line == f"freezetune: error: {raised.value}"


def test_keywords_override_a_config_object_and_a_yaml_file(tmp_path):
    from freezetune.config import build_options as build

    config = freezetune.TrainConfig(output_dir="a", strategy="freeze2", epochs=2)
    assert build(freezetune.TrainConfig, config, {}, "train") is config
    changed = build(freezetune.TrainConfig, config, {"epochs": 5, "freeze": 3}, "train")
    assert (changed.epochs, changed.strategy, changed.output_dir, config.epochs) == (5, "freeze3", "a", 2)
    (tmp_path / "options.yaml").write_text("epochs: 4\nbatch-size: 8\nseeds: [0, 1]\n", encoding="utf-8")
    options = build(CompareOptions, None, {"config": str(tmp_path / "options.yaml"), "output_dir": "s", "epochs": 1}, "compare")
    assert (options.epochs, options.batch_size, options.seeds, options.config) == (1, 8, [0, 1], str(tmp_path / "options.yaml"))
    with pytest.raises(UserError, match="train needs output_dir="):
        freezetune.train(epochs=1)


def test_train_returns_metrics_as_a_dict_and_speaks_as_the_cli(monkeypatch, tmp_path):
    import logging

    import freezetune.training

    seen = []

    def fake_train(config, splits=None):  # stands in for the run: what api.train hands it, and how it logs
        logger = logging.getLogger("freezetune")
        seen.append((config, splits, logger.isEnabledFor(logging.INFO), len(logger.handlers)))
        return {"strategy": config.strategy, "epochs": []}

    monkeypatch.setattr(freezetune.training, "train", fake_train)
    logger = logging.getLogger("freezetune")
    monkeypatch.setattr(logger, "handlers", [])  # a program that configured no logging (not even the CLI's)
    level = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        metrics = freezetune.train(output_dir=str(tmp_path / "out"), freeze=3, epochs=2)
        assert isinstance(metrics, RunMetrics) and metrics == {"strategy": "freeze3", "epochs": []}
        config, splits, info, handlers = seen[-1]
        assert (config.output_dir, config.epochs, splits, info, handlers) == (str(tmp_path / "out"), 2, None, True, 1)
        assert logger.handlers == [] and logger.level == logging.NOTSET and logger.propagate  # as it was
        logger.setLevel(logging.WARNING)  # a program that asked for quiet stays quiet
        freezetune.train(config, "splits")
        assert seen[-1] == (config, "splits", False, 0)
    finally:
        logger.setLevel(level)


def test_the_study_folder_is_a_path_that_shows_its_summary(executed):
    _, runs = executed
    study = StudyFolder(runs / "study")
    assert study == runs / "study" and isinstance(study, Path) and (study / "report.md").is_file()
    assert (study / "runs")._repr_html_() is None  # a path inside the study is no study
    (table,) = Tables(study._repr_html_()).tables
    assert [row[0] for row in table[1:]] == ["full", "freeze1"]
    assert sorted(study.runs()) == ["freeze1-seed0", "full-seed0"]
    on_disk = json.loads((study / "runs" / "full-seed0" / "metrics.json").read_text(encoding="utf-8"))
    assert study.runs()["full-seed0"] == on_disk


# --- the display ---------------------------------------------------------------------------------------------

def _metrics(**changes) -> RunMetrics:
    epochs = [{"epoch": e, "train_loss": 1.0 / e, "eval_loss": 0.9 / e, "accuracy": acc, "macro_f1": acc / 2}
              for e, acc in ((1, 0.5), (2, 0.75), (3, 0.7))]
    metrics = {"strategy": "freeze1", "best_epoch": 2, "selection_metric": "accuracy", "epochs": epochs,
               "evaluation_split": "test", "label_names": ["<b>bold</b>", "a&b"], "trainable_params": 1234,
               "total_params": 5678, "train_seconds": 2.5, "init": "pretrained",
               "data_notes": ["file <script>x</script>.csv had 2 empty texts"],
               "evaluation": {"accuracy": 0.8125, "macro_f1": 0.5, "per_class": {
                   "<b>bold</b>": {"f1": 0.25}, "a&b": {"f1": 0.75}}},
               "evaluation_probabilities": [[0.5, 0.5]] * 1000}
    return RunMetrics({**metrics, **changes})


def test_run_html_marks_the_best_epoch_and_escapes_every_value():
    html = _metrics()._repr_html_()
    (table,) = Tables(html).tables
    assert table[0] == EPOCH_COLUMNS
    assert [row[0] for row in table[1:]] == ["1", "2 *", "3", "test (best epoch)"]
    assert table[2] == ["2 *", "0.5000", "0.4500", "0.7500", "0.3750"]
    assert table[4][3:] == ["0.8125", "0.5000"]
    bold_rows = [chunk for chunk in html.split("<tr") if "font-weight:bold" in chunk]
    assert len(bold_rows) == 1 and "2 *" in bold_rows[0]
    assert "<b>" not in html and "<script>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; 0.2500" in html and "a&amp;b 0.7500" in html and "&lt;script&gt;" in html
    markdown = _metrics()._repr_markdown_()
    assert "| 2 * | 0.5000 | 0.4500 | 0.7500 | 0.3750 |" in markdown and "<script>" not in markdown


def test_run_text_form_is_a_table_not_the_probabilities():
    text = repr(_metrics(init="random"))
    assert "RANDOM INIT" in text and "0.5, 0.5" not in text and len(text.splitlines()) < 12
    assert text.splitlines()[-3].split() == ["2", "*", "0.5000", "0.4500", "0.7500", "0.3750"]


def test_side_by_side_marks_each_runs_best_epoch():
    view = side_by_side({"full": _metrics(best_epoch=3), "<i>": _metrics()})
    epochs, totals = Tables(view._repr_html_()).tables
    assert [row[:2] for row in epochs[1:]] == [["full", "1"], ["full", "2"], ["full", "3 *"],
                                               ["<i>", "1"], ["<i>", "2 *"], ["<i>", "3"]]
    assert "<i>" not in view._repr_html_()
    assert totals[1] == ["full", "0.8125", "0.5000", "1,234", "2.5"]
    with pytest.raises(UserError, match="mapping of names"):
        side_by_side([_metrics()])
