"""freezetune: fine-tune pretrained encoders for short-text classification, and measure each way of tuning.

The pipeline, one module per step: data -> models -> tuning (freezing) -> train -> predict/report.
"""

from .config import TrainConfig
from .data import Splits, load_splits
from .errors import UserError

__version__ = "0.1.0"
__all__ = ["TrainConfig", "Splits", "UserError", "load_splits", "train", "evaluate", "Predictor", "export_onnx", "OnnxPredictor"]


def __getattr__(name):
    # torch/transformers load lazily so `freezetune --help` and data commands start fast.
    if name == "train":
        from .training import train

        return train
    if name in ("evaluate", "Predictor"):
        from . import predict

        return getattr(predict, name)
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    if name == "OnnxPredictor":
        from .onnx_predict import OnnxPredictor

        return OnnxPredictor
    raise AttributeError(name)
