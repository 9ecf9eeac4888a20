"""The Trainer's own options: warm-up and schedule, weight decay, gradient accumulation, gradient clipping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from freezetune.cli import main
from freezetune.training import run as training
from freezetune.training import train

from .conftest import SPLIT_SIZES, tiny_config
from .tiny_models import model_of


def record_steps(monkeypatch) -> list[float]:
    """The learning rate of every optimizer step of the runs that follow (the first group's: the scheduler's)."""
    lrs = []
    real = training.make_optimizer

    def recording(*args, **kwargs):
        optimizer, params = real(*args, **kwargs)
        optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
        return optimizer, params

    monkeypatch.setattr(training, "make_optimizer", recording)
    return lrs


def record_plans(monkeypatch) -> list:
    """The TrainPlan each run of the tests that follow hands its strategy."""
    plans = []
    real = training.prepare_strategy
    monkeypatch.setattr(training, "prepare_strategy", lambda strategy, model, plan: plans.append(plan)
                        or real(strategy, model, plan))
    return plans


@pytest.mark.parametrize("scheduler, warmup", [("linear", {"warmup_ratio": 0.2}), ("cosine", {"warmup_steps": 6})])
def test_warmup_rises_linearly_then_the_schedule_decays(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch, scheduler,
                                                       warmup):
    lrs = record_steps(monkeypatch)
    config = tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="head", epochs=2, batch_size=8,
                         lr=1e-2, lr_scheduler_type=scheduler, **warmup)
    metrics = train(config)
    total = config.epochs * math.ceil(SPLIT_SIZES["train"] / config.batch_size)
    steps = np.arange(total)
    assert len(lrs) == total and len(metrics["epochs"]) == config.epochs
    warmup_steps = 6  # 20% of the 30 steps, or given as such
    np.testing.assert_allclose(lrs[:warmup_steps], config.lr * steps[:warmup_steps] / warmup_steps)
    progress = (steps[warmup_steps:] - warmup_steps) / (total - warmup_steps)  # 0 -> 1 after the warm-up
    decay = 1 - progress if scheduler == "linear" else 0.5 * (1 + np.cos(np.pi * progress))
    np.testing.assert_allclose(lrs[warmup_steps:], config.lr * decay, atol=1e-12)
    run_config = json.loads((tmp_path / "out" / "run_config.json").read_text())
    assert run_config["lr_scheduler_type"] == scheduler and run_config["warmup_steps"] == warmup.get("warmup_steps", 0)
    assert f"| `lr_scheduler_type` | {scheduler} |" in (tmp_path / "out" / "README.md").read_text()


@pytest.fixture(scope="module")
def no_dropout_bert(tiny_bert, tmp_path_factory):
    """tiny_bert without dropout: two runs that see the same rows compute the same steps."""
    import shutil

    folder = tmp_path_factory.mktemp("no_dropout") / "model"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_two_accumulated_batches_of_4_train_as_one_batch_of_8(no_dropout_bert, tiny_csv_dir, tmp_path, monkeypatch):
    """The same rows per optimizer step (random order, no length grouping), the same steps: the same run. The loss
    is normalised over the accumulated rows (the model's own loss is each batch's mean, which would double it)."""
    lrs, plans = record_steps(monkeypatch), record_plans(monkeypatch)
    settings = {"strategy": "full", "epochs": 2, "precision": "fp32", "length_grouping": False, "calibration": "none"}
    whole = train(tiny_config(no_dropout_bert, tiny_csv_dir, tmp_path / "whole", batch_size=8, **settings))
    steps_whole = len(lrs)
    halves = train(tiny_config(no_dropout_bert, tiny_csv_dir, tmp_path / "halves", batch_size=4,
                               gradient_accumulation_steps=2, **settings))
    assert len(lrs) - steps_whole == steps_whole == 2 * math.ceil(SPLIT_SIZES["train"] / 8)
    assert [plan.steps_per_epoch for plan in plans] == [steps_whole // 2] * 2  # optimizer steps, as the Trainer's
    for one, two in zip(whole["epochs"], halves["epochs"], strict=True):
        assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "halves"))
    assert a.keys() == b.keys()
    # Not the key biases: they shift every score of a row alike, which softmax ignores, so their gradient is float
    # noise (about 1e-10) that Adam's normalisation turns into steps of its own; they stay about 1e-5 from 0.
    for name in (name for name in a if not name.endswith("key.bias")):
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5, msg=name)
    assert "2 batches per optimizer step: global batch 8" in (tmp_path / "halves" / "train.log").read_text()


def test_weight_decay_decays_the_weights_and_turns_compact_embeddings_off(tiny_bert, tiny_csv_dir, tmp_path):
    from transformers import AutoTokenizer

    unseen = AutoTokenizer.from_pretrained(tiny_bert).mask_token_id  # no training text holds [MASK]
    before = load_file(tiny_bert / "model.safetensors")["embeddings.word_embeddings.weight"][unseen]
    rows = {}
    for decay in (0.0, 0.5):
        out = tmp_path / f"decay{decay:g}"
        train(tiny_config(tiny_bert, tiny_csv_dir, out, strategy="full", epochs=1, weight_decay=decay))
        rows[decay] = load_file(out / "model.safetensors")["bert.embeddings.word_embeddings.weight"][unseen]
        log = (out / "train.log").read_text()
        assert ("compact embeddings off: --weight-decay 0.5 would decay rows the data never uses" in log) == bool(decay)
    assert torch.equal(rows[0.0], before)  # compact (or dense without decay): a row without gradient never moves
    # AdamW's decoupled decay shrinks it by lr x decay at every step, towards 0.
    assert rows[0.5].norm() < before.norm() and torch.allclose(rows[0.5] / before, (rows[0.5] / before)[0])


def test_weight_decay_spares_biases_and_norms_and_keeps_each_groups_lr():
    from freezetune.strategies import TrainPlan, parse_strategy, prepare

    model = model_of("bert")
    strategy = parse_strategy("llrd:0.8")  # one learning rate per layer
    prepare(strategy, model, TrainPlan(epochs=1, steps_per_epoch=1))
    names = {id(p): name for name, p in model.named_parameters()}

    def by_parameter(weight_decay):
        optimizer, _ = training.make_optimizer(model, strategy, 1e-3, weight_decay=weight_decay)
        return {names[id(p)]: (group["lr"], group["weight_decay"]) for group in optimizer.param_groups
                for p in group["params"]}

    plain, decayed = by_parameter(0.0), by_parameter(0.01)
    assert plain.keys() == decayed.keys() and len({lr for lr, _ in plain.values()}) > 2
    for name, (lr, decay) in decayed.items():
        spared = name.endswith("bias") or "LayerNorm" in name
        assert lr == plain[name][0] and plain[name][1] == 0.0 and decay == (0.0 if spared else 0.01), name
    assert any(decay for _, decay in decayed.values()) and any(not decay for _, decay in decayed.values())


@pytest.mark.parametrize("flags, message", [
    (["--warmup-ratio", "-0.1"], "--warmup-ratio must be a number from 0 to below 1"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio must be a number from 0 to below 1"),
    (["--warmup-steps", "-3"], "--warmup-steps must be an integer of at least 0"),
    (["--lr-scheduler", "cosin"], "invalid choice: 'cosin'"),
    (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps must be an integer of at least 1"),
    (["--weight-decay", "-0.01"], "--weight-decay must be a finite number >= 0"),
    (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number >= 0"),
    (["--warmup-ratio", "0.1", "--warmup-steps", "5"], "both set the warm-up: pass one of them"),
    (["--lr-scheduler", "constant", "--warmup-steps", "5"], "use constant_with_warmup"),
])
def test_bad_values_are_one_line_and_exit_2(capsys, tiny_bert, tiny_csv_dir, tmp_path, flags, message):
    out = tmp_path / "out"
    code = main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("freezetune: error: ") == 1 and message in err.strip().splitlines()[-1], err
    assert "Traceback" not in err and not out.exists()


def test_an_interrupted_run_resumes_exactly_with_these_options(tiny_bert, tiny_csv_dir, tmp_path):
    """The schedule's place, the accumulation window and the decayed weights come back from the checkpoint."""
    from freezetune.config import TrainConfig

    from .test_resume import interrupted_at, without_timings

    options = {"model": str(tiny_bert), "data": str(tiny_csv_dir), "strategy": "head", "epochs": 3, "batch_size": 4,
               "lr": 5e-2, "max_length": 16, "precision": "fp32", "warmup_ratio": 0.2, "lr_scheduler_type": "cosine",
               "weight_decay": 0.1, "gradient_accumulation_steps": 2, "max_grad_norm": 0.5}
    expected = without_timings(train(TrainConfig(**options, output_dir=str(tmp_path / "reference"))))
    out = tmp_path / "out"
    with interrupted_at(step=22):  # 15 optimizer steps an epoch: in the middle of epoch 2
        train(TrainConfig(**options, output_dir=str(out)))
    assert not out.exists()
    assert without_timings(train(TrainConfig(**options, output_dir=str(out), resume=True))) == expected


def test_a_checkpoint_from_before_these_options_resumes_with_their_defaults(tiny_bert, tiny_csv_dir, tmp_path):
    from freezetune.config import TrainConfig
    from freezetune.errors import UserError
    from freezetune.training import resume

    config = TrainConfig(output_dir=str(tmp_path / "out"), resume=True, model=str(tiny_bert), data=str(tiny_csv_dir))
    folder = resume.resume_dir(config.output_dir)
    (folder / "checkpoint-5").mkdir(parents=True)
    torch.save({}, folder / "checkpoint-5" / resume.MARKER_FILE)  # complete and readable, as far as the check looks
    new = ("warmup_ratio", "warmup_steps", "lr_scheduler_type", "weight_decay", "gradient_accumulation_steps",
           "max_grad_norm")
    older = {k: v for k, v in resume.run_defining(config).items() if k not in new}  # written before they existed
    (folder / resume.RECORD_FILE).write_text(json.dumps({"options": older, "data": ""}), encoding="utf-8")
    assert resume.Checkpoints.open(config).resume  # the Trainer's defaults, which such a run had
    (folder / resume.RECORD_FILE).write_text(json.dumps({"options": {**older, "gradient_accumulation_steps": 2},
                                                         "data": ""}), encoding="utf-8")
    with pytest.raises(UserError, match="other gradient_accumulation_steps"):
        resume.Checkpoints.open(config)
