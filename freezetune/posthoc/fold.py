"""The classification head's final linear layer, and folding a temperature and logit offsets into it.

Temperature scaling (calibration.py) and the decision rule's offsets (decision.py) both act on the logits:
logits' = (W x + b) / T + o. That equals (W / T) x + (b / T + o), an ordinary linear layer, so writing it into
the saved weights makes every prediction path (freezetune's Predictor, the ONNX export, a plain
`transformers.pipeline`) give the same labels and probabilities with no extra configuration, at the same
precision (a bf16 forward pass can flip a near-tie). T and o are also recorded in config.json
(`freezetune_temperature`, `freezetune_logit_offsets`) so a reader can see what was folded: the head's
unscaled logits are (logits' - o) x T, and softmax(logits' - o) are the calibrated probabilities.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UserError
from ..layout import OFFSETS_KEY, TEMPERATURE_KEY


def final_linear(model):
    """The linear layer that produces the logits of a HF sequence classifier, as its anatomy says
    (models/anatomy.py: `classifier` in BERT, DistilBERT and the builtin model, `classifier.out_proj` in RoBERTa,
    XLM-R and ELECTRA, `score` in decoder-only families, `classification_head.out_proj` in T5 and BART)."""
    from ..models.anatomy import KNOWN, anatomy

    linear = anatomy(model).final_linear
    if linear is None:
        raise UserError(f"cannot find the final linear layer of {type(model).__name__}: --decision and --calibration "
                        f"work with sequence classifiers of the model types {KNOWN}; use --decision argmax "
                        "--calibration none with this model")
    return linear


def check_foldable(model, offsets: bool):
    """The final linear layer, if what will be folded fits it: the layer must exist, and have a bias when there
    are offsets (a temperature alone only scales the weight). Training calls it before training, not after."""
    linear = final_linear(model)
    if offsets:
        check_offsets_fit(linear, type(model).__name__)
    return linear


def check_offsets_fit(linear, name: str) -> None:
    """Decision offsets are folded into the bias of the final linear layer (`linear`, of the model `name`): refuse
    one without (compare checks its models' skeletons with it before any run)."""
    if linear is not None and linear.bias is None:
        # Decoder-only heads (`score`) are built without a bias: one added here would be dropped, unread, by
        # transformers when it loads the saved folder, and pipeline() would serve other labels.
        raise UserError(f"the final linear layer of {name} has no bias to fold the decision offsets into: use "
                        "--decision argmax with this model (a decoder's head has none, and transformers would not "
                        "load one added; --calibration temperature still works)")


def folded(config) -> tuple[float, np.ndarray]:
    """The temperature and offsets already folded into a model (1 and zeros if none)."""
    offsets = getattr(config, OFFSETS_KEY, None)
    offsets = np.zeros(config.num_labels) if offsets is None else np.asarray(offsets, dtype=np.float64)
    return float(getattr(config, TEMPERATURE_KEY, 1.0)), offsets


def fold_into_classifier(model, temperature: float, offsets) -> None:
    """Make the model's logits (old logits) / temperature + offsets, in place, and record both in model.config.

    Folding again composes: the config then holds the totals relative to the head before any folding.
    """
    import torch

    offsets = np.asarray(offsets, dtype=np.float64)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    linear = check_foldable(model, offsets=bool(np.any(offsets)))
    if offsets.shape != (linear.out_features,) or not np.all(np.isfinite(offsets)):
        raise ValueError(f"need {linear.out_features} finite offsets (one per class), got shape {offsets.shape}")
    with torch.no_grad():
        # In float64, then back to the layer's dtype: one rounding, not three.
        linear.weight.copy_(linear.weight.double() / temperature)
        if linear.bias is not None:
            linear.bias.copy_(linear.bias.double() / temperature + torch.from_numpy(offsets).to(linear.bias.device))
    before_temperature, before_offsets = folded(model.config)
    setattr(model.config, TEMPERATURE_KEY, before_temperature * temperature)
    setattr(model.config, OFFSETS_KEY, (before_offsets / temperature + offsets).tolist())
