"""freezetune: fine-tune pretrained transformers for short-text classification, and measure each way of tuning.

The pipeline, one package per step: data -> models -> strategies (which parameters train) -> posthoc (calibration
and the decision rule, folded into the head) -> inference (predict, export; training's final scoring uses it too)
-> training (losses/ its loss terms) -> compare (the study) and serve -> api -> cli. choices.py and layout.py, at
the bottom, hold the options' vocabularies and the output folders' file names. Everything but the config and the
error type loads lazily, so `freezetune --help` and `freezetune data list` do not import torch, pandas or matplotlib.

`train(...)` and `study(...)` take the command line's options as keywords (api.py); what they return displays
as tables in Jupyter (display.py). examples/quickstart.ipynb walks through them.
"""

from .config import TrainConfig, TrainOptions
from .errors import UserError

__version__ = "0.1.0"
__all__ = ["TrainConfig", "TrainOptions", "Splits", "UserError", "load_splits", "train", "study", "side_by_side",
           "evaluate", "Predictor", "export_onnx", "OnnxPredictor", "parse_strategy"]

_LAZY = {
    "Splits": ("data", "Splits"), "load_splits": ("data", "load_splits"),
    "train": ("api", "train"), "study": ("api", "study"), "side_by_side": ("display", "side_by_side"),
    "evaluate": ("inference.predict", "evaluate"), "Predictor": ("inference.predict", "Predictor"),
    "export_onnx": ("inference.export", "export_onnx"), "OnnxPredictor": ("inference.onnx_predict", "OnnxPredictor"),
    "parse_strategy": ("strategies", "parse_strategy"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)
