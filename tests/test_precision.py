"""Mixed precision: `auto` picks what the hardware runs natively, and a bf16 run really computes in bf16."""

from __future__ import annotations

import pytest
import torch

from freezetune import Predictor, UserError
from freezetune import precision as precision_module
from freezetune.precision import autocast, resolve_precision
from freezetune.training import train

from .conftest import tiny_config


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_is_bf16_only_where_native(monkeypatch, native):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")


def test_explicit_precisions_are_checked():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(UserError, match="--precision 'half' is not valid"):
        resolve_precision("half", "cpu")


def test_autocast_runs_matmuls_in_bf16_and_fp32_not():
    layer = torch.nn.Linear(4, 4)
    with autocast("bf16", "cpu"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_computes_in_the_chosen_precision(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch, precision, dtype):
    from transformers import Trainer

    seen = set()
    original_step = Trainer.training_step

    def recording_step(self, model, inputs, *args, **kwargs):
        handle = model.classifier.register_forward_hook(lambda module, inp, out: seen.add(out.dtype))
        try:
            return original_step(self, model, inputs, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(Trainer, "training_step", recording_step)
    out = tmp_path / "out"
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, out, strategy="full", precision=precision))
    assert seen == {dtype}
    assert metrics["precision"] == precision
    # Weights stay float32, and the saved model predicts what training recorded, at the same precision.
    assert all(p.dtype == torch.float32 for p in Predictor(str(out), precision=precision).model.parameters())
    import pandas as pd

    texts = pd.read_csv(tiny_csv_dir / "test.csv")["sentence"].tolist()
    preds = Predictor(str(out), batch_size=64, precision=precision).probabilities(texts).argmax(axis=-1)
    assert preds.tolist() == metrics["evaluation_predictions"]
