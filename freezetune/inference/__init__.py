"""Inference: a trained folder -> probabilities, the same code for every command that scores texts.

- classifier.py: `TextClassifier` (what every predictor offers), `BatchedClassifier` (tokenize in batches,
  sorted by length), `TorchClassifier` (a PyTorch model in memory, also used by training's final evaluation)
- predict.py: `Predictor` (a trained folder with PyTorch) and `evaluate` (`freezetune eval`)
- onnx_predict.py: `OnnxPredictor` (an exported folder with ONNX Runtime)
- export.py: `export_onnx` (`freezetune export`: ONNX, optionally int8)
- ensemble.py: `EnsemblePredictor` (averages several folders' probabilities)
- backends.py: `load_predictor`, the one way `predict`, `eval` and `serve` pick a predictor, and their flags
"""
