"""Every strategy proven bit for bit: frozen parameters do not move by a single bit, trainable ones do.

Training runs the sequence freezetune's training code runs (prepare, parameter groups, AdamW, callbacks) with a
plain torch loop firing the callbacks as the HF Trainer does, or with a tiny real Trainer.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    pipeline,
)

from freezetune import UserError
from freezetune.models.anatomy import anatomy
from freezetune.strategies import (
    TrainPlan,
    frozen_prefix,
    parameter_counts,
    parse_strategy,
    prepare,
    trainable_parameters,
)
from freezetune.training.compact_embedding import CompactEmbedding

from .tiny_models import CONFIGS, FAMILIES, model_of

LR = 1e-2


def train_by_hand(model, strategy, plan: TrainPlan) -> dict[str, torch.Tensor]:
    """Train on random data as training does; returns every parameter's value before training, by name."""
    params = prepare(strategy, model, plan)
    groups = strategy.parameter_groups(model, params, LR) or [{"params": params, "lr": LR}]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    callbacks = strategy.callbacks(model, plan)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    state, control = TrainerState(epoch=0.0, global_step=0), TrainerControl()
    generator = torch.Generator().manual_seed(0)
    model.train()
    for epoch in range(plan.epochs):
        for callback in callbacks:
            callback.on_epoch_begin(None, state, control)
        for step in range(plan.steps_per_epoch):
            for callback in callbacks:
                callback.on_step_begin(None, state, control)
            ids = torch.randint(5, model.config.vocab_size, (4, 8), generator=generator)
            model(input_ids=ids, labels=torch.randint(0, 3, (4,), generator=generator)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            state.global_step += 1
            state.epoch = epoch + (step + 1) / plan.steps_per_epoch
    return before


def changed(model, before) -> set[str]:
    """Names of the parameters whose value differs from `before` in any bit."""
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert {name for name, p in model.named_parameters() if torch.equal(p, before[name])} == set(before) - moved
    return moved


def names_of(model, params) -> set[str]:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def in_encoder(model, name: str) -> bool:
    return name.startswith(model.base_model_prefix + ".")


def layer_of(name: str) -> int | None:
    """The encoder layer a parameter name belongs to (the name, not the layer finder, is the oracle here)."""
    found = re.search(r"\.layers?\.(\d+)\.", name)
    return int(found[1]) if found else None


def adapted(names) -> set[str]:
    """The last names of the modules holding LoRA parameters among `names` (e.g. query, value)."""
    return {n.split(".lora_")[0].rpartition(".")[2] for n in names if ".lora_" in n}


# --- bitfit -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_bitfit_trains_exactly_biases_layernorms_and_head(kind):
    torch.manual_seed(0)
    model = model_of(kind)
    before = train_by_hand(model, parse_strategy("bitfit"), TrainPlan(epochs=1, steps_per_epoch=3))
    expected = {n for n in before
                if n.endswith(".bias") or re.search(r"layer_?norm", n, re.I) or not in_encoder(model, n)}
    assert any(n.endswith("LayerNorm.weight") or n.endswith("layer_norm.weight") for n in expected)
    assert changed(model, before) == expected


def test_bitfit_with_freeze_keeps_the_frozen_layers_biases():
    model = model_of("bert")
    before = train_by_hand(model, parse_strategy("freeze2+bitfit"), TrainPlan(epochs=1, steps_per_epoch=3))
    moved = changed(model, before)
    assert not any(layer_of(n) in (0, 1) for n in moved)
    assert {n for n in moved if layer_of(n) == 2} == {n for n in before if layer_of(n) == 2 and (
        n.endswith(".bias") or "LayerNorm" in n)}
    assert "bert.embeddings.LayerNorm.weight" in moved  # freezeN leaves the embeddings to the method


# --- lora -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_lora_trains_only_adapters_and_head_then_merges_into_a_plain_model(kind):
    torch.manual_seed(0)
    model = model_of(kind)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = parse_strategy("lora:r=4")
    before = train_by_hand(model, strategy, TrainPlan(epochs=1, steps_per_epoch=3))
    moved = changed(model, before)
    assert moved == {n for n in before if re.search(r"\.lora_[AB]\.|\.modules_to_save\.", n)}
    head = {n for n in original if not in_encoder(model, n)}
    assert {n.replace(".modules_to_save.default", "") for n in moved if ".modules_to_save." in n} == head
    assert adapted(moved) == ({"q_lin", "v_lin"} if kind == "distilbert" else {"query", "value"})
    assert {layer_of(n) for n in moved if ".lora_" in n} == {0, 1, 2}

    model.eval()
    ids = torch.randint(5, 50, (3, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        merged_model = strategy.finalize(model)
        merged = merged_model(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    merged_state = merged_model.state_dict()
    assert list(merged_state) == list(original)
    assert not hasattr(merged_model, "peft_config")
    untouched = [k for k in original
                 if in_encoder(model, k) and not re.search(r"\.(query|value|q_lin|v_lin)\.weight$", k)]
    assert all(torch.equal(merged_state[k], original[k]) for k in untouched)
    assert not any(torch.equal(merged_state[k], original[k]) for k in head)  # the trained head was kept


@pytest.mark.parametrize("spec", ["lora:r=4", "freeze1+lora:targets=all"])
def test_lora_merges_bit_for_bit_as_peft_merges_the_same_adapters(spec, tmp_path):
    """The saved model is what peft's own PeftModel.merge_and_unload makes of the adapter saved beside it."""
    import copy

    from peft import PeftModel

    torch.manual_seed(0)
    model = model_of("distilbert")  # a head of two modules (pre_classifier, classifier)
    pristine = copy.deepcopy(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = parse_strategy(spec)
    train_by_hand(model, strategy, TrainPlan(epochs=1, steps_per_epoch=3))
    strategy.save_extras(model, tmp_path, keep_adapter=True)
    ours = strategy.finalize(model).state_dict()

    theirs = PeftModel.from_pretrained(pristine, tmp_path / "adapter").merge_and_unload().state_dict()
    assert list(ours) == list(theirs) == list(original)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not torch.equal(ours["distilbert.transformer.layer.2.attention.q_lin.weight"],
                           original["distilbert.transformer.layer.2.attention.q_lin.weight"])  # something merged


def test_lora_parameter_count_follows_the_formula():
    model = model_of("bert")
    strategy = parse_strategy("lora:r=4")
    prepare(strategy, model, TrainPlan(1, 1))
    h, layers, labels = CONFIGS["bert"].hidden_size, 3, 3
    # per layer: query and value, each A (r x h) and B (h x r); the head: a copy of the classifier
    assert parameter_counts(model, strategy)["trainable_params"] == layers * 2 * (4 * h + h * 4) + h * labels + labels


def test_lora_trains_under_two_percent_of_a_bert_base_shaped_model():
    with torch.device("meta"):  # shapes only: no memory, no time
        model = AutoModelForSequenceClassification.from_config(BertConfig(num_labels=3))
    strategy = parse_strategy("lora")
    prepare(strategy, model, TrainPlan(1, 1))
    counts = parameter_counts(model, strategy)
    assert counts["trainable_params"] == 12 * 2 * (8 * 768 + 768 * 8) + 768 * 3 + 3
    assert counts["trainable_params"] / counts["total_params"] < 0.02


def test_freeze6_lora_puts_adapters_on_the_top_layers_only():
    model = model_of("bert", num_hidden_layers=12)
    strategy = parse_strategy("freeze6+lora")
    params = prepare(strategy, model, TrainPlan(1, 1))
    assert {layer_of(n) for n in names_of(model, params) if ".lora_" in n} == set(range(6, 12))
    assert not any(p.requires_grad for m in anatomy(model).embeddings for p in m.parameters())
    assert frozen_prefix(model, strategy) == 6


def test_lora_adapter_round_trip(tiny_bert, tmp_path):
    def base():
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)

    torch.manual_seed(0)
    model = base()
    strategy = parse_strategy("lora:r=4")
    train_by_hand(model, strategy, TrainPlan(epochs=1, steps_per_epoch=3))
    strategy.save_extras(model, tmp_path, keep_adapter=True)  # before finalize, as training calls it
    strategy.finalize(model).save_pretrained(tmp_path / "model")

    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert adapter and all(".lora_" in k or k.startswith("base_model.model.classifier.") for k in adapter)
    ids = torch.randint(5, 30, (3, 8), generator=torch.Generator().manual_seed(1))
    from peft import PeftModel

    with torch.no_grad():
        plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(base(), tmp_path / "adapter").eval()
        through_adapter = peft_model(input_ids=ids).logits
    torch.testing.assert_close(through_adapter, plain, atol=1e-5, rtol=0)


def test_merged_lora_model_runs_in_a_plain_pipeline(tiny_bert, tmp_path, monkeypatch):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    strategy = parse_strategy("freeze1+lora")
    prepare(strategy, model, TrainPlan(1, 1))
    strategy.finalize(model).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path)
    monkeypatch.setitem(sys.modules, "peft", None)  # loading must not need peft
    assert not (tmp_path / "adapter_config.json").exists()
    predictions = pipeline("text-classification", model=str(tmp_path), device="cpu")(["好棒", "差"])
    assert [p["label"] for p in predictions] and all(0 <= p["score"] <= 1 for p in predictions)


def test_lora_writes_no_adapter_unless_asked(tmp_path):
    model = model_of("bert")
    strategy = parse_strategy("lora")
    prepare(strategy, model, TrainPlan(1, 1))
    strategy.save_extras(model, tmp_path, keep_adapter=False)
    assert not any(tmp_path.iterdir())


def test_lora_explicit_targets():
    model = model_of("bert")
    params = prepare(parse_strategy("lora:targets=query/key/value"), model, TrainPlan(1, 1))
    assert adapted(names_of(model, params)) == {"query", "key", "value"}
    with pytest.raises(UserError, match=r"no Linear layer named nope: choose targets from .*query.*, or targets=all"):
        prepare(parse_strategy("lora:targets=query/nope"), model_of("bert"), TrainPlan(1, 1))
    with pytest.raises(UserError, match="targets=all and targets=auto stand alone"):
        parse_strategy("lora:targets=all/query")
    # `all`: every Linear layer inside the encoder layers (BERT's attention and feed-forward `dense` ones too)
    model = model_of("bert")
    params = prepare(parse_strategy("lora:targets=all"), model, TrainPlan(1, 1))
    assert adapted(names_of(model, params)) == {"query", "key", "value", "dense"}
    modules = {n.split(".lora_")[0] for n in names_of(model, params) if ".lora_" in n}
    assert len(modules) == 6 * anatomy(model).depth  # q, k, v, attention out, intermediate, output


def test_lora_refuses_when_every_layer_is_frozen():
    with pytest.raises(UserError, match="all 3 encoder layers are frozen"):
        prepare(parse_strategy("freeze3+lora"), model_of("bert"), TrainPlan(1, 1))


def test_lora_without_peft_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what a missing package looks like to the import system
    with pytest.raises(UserError, match=r"pip install 'freezetune\[lora\]'"):
        parse_strategy("freeze6+lora")


# --- llrd -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", FAMILIES)
def test_llrd_group_learning_rates_are_exact(kind):
    model = model_of(kind)
    strategy = parse_strategy("llrd:0.8")
    params = prepare(strategy, model, TrainPlan(1, 1))
    groups = strategy.parameter_groups(model, params, LR)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(lr_of) == len(params)  # each parameter in one group
    for name, p in model.named_parameters():
        if layer_of(name) is not None:
            expected = LR * 0.8 ** (3 - (layer_of(name) + 1))
        elif ".embeddings" in name:
            expected = LR * 0.8**3
        else:
            expected = LR  # the head, and a pooler
        assert lr_of[id(p)] == expected, name


def test_llrd_places_a_swapped_in_compact_embedding_by_module():
    model = model_of("bert")
    strategy = parse_strategy("llrd:0.5")
    prepare(strategy, model, TrainPlan(1, 1))
    compact = CompactEmbedding(model.get_input_embeddings(), torch.tensor([1, 4, 9]))
    model.set_input_embeddings(compact)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = strategy.parameter_groups(model, params, LR)
    assert [g["lr"] for g in groups if any(p is compact.weight_rows for p in g["params"])] == [LR * 0.5**3]


def test_llrd_with_freeze_groups_only_what_trains():
    model = model_of("bert")
    strategy = parse_strategy("freeze1+emb+llrd:0.9")
    before = train_by_hand(model, strategy, TrainPlan(epochs=1, steps_per_epoch=2))
    groups = strategy.parameter_groups(model, trainable_parameters(model, strategy), LR)
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    assert {layer_of(n) for n in changed(model, before)} == {1, 2, None}
    assert frozen_prefix(model, strategy) == 1


# --- gradual ----------------------------------------------------------------------------------------------------

def trainable_blocks(model) -> list[str]:
    """Which of layer 0..2 and the embeddings have a trainable parameter now."""
    blocks = {f"layer{i}": layer for i, layer in enumerate(b.module for b in anatomy(model).blocks)}
    blocks["emb"] = model.base_model.embeddings
    return [name for name, block in blocks.items() if any(p.requires_grad for p in block.parameters())]


def test_gradual_unfreezes_from_the_top_then_the_embeddings():
    model = model_of("electra")
    strategy = parse_strategy("gradual")
    prepare(strategy, model, TrainPlan(epochs=10, steps_per_epoch=1))
    gradual = strategy.parts[-1]
    seen = []
    for epoch in range(5):
        gradual.unfreeze(epoch=epoch, step=epoch)
        seen.append(trainable_blocks(model))
    assert seen == [[], ["layer2"], ["layer1", "layer2"], ["layer0", "layer1", "layer2"],
                    ["layer0", "layer1", "layer2", "emb"]]
    assert model.base_model.embeddings_project.weight.requires_grad  # ELECTRA's projection goes with the embeddings
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("epochs, every, prefix", [(1, 1, 3), (2, 1, 2), (3, 1, 1), (4, 1, 0), (5, 1, 0), (4, 2, 2)])
def test_gradual_frozen_prefix_is_what_never_unfreezes_within_the_run(epochs, every, prefix):
    model = model_of("bert")
    strategy = parse_strategy(f"gradual:{every}")
    prepare(strategy, model, TrainPlan(epochs=epochs, steps_per_epoch=5))
    assert frozen_prefix(model, strategy) == prefix
    head_and_pooler = [p for n, p in model.named_parameters() if not in_encoder(model, n) or ".pooler." in n]
    assert [p for p in model.parameters() if p.requires_grad] == head_and_pooler  # what trains from the start


def test_gradual_in_steps_trained_by_hand():
    model = model_of("bert")
    strategy = parse_strategy("gradual:steps=2")
    before = train_by_hand(model, strategy, TrainPlan(epochs=1, steps_per_epoch=5))  # unfreezes at steps 2 and 4
    assert {layer_of(n) for n in changed(model, before)} == {2, 1, None}
    assert not any(".embeddings." in n for n in changed(model, before))
    assert frozen_prefix(model, strategy) == 1


def test_gradual_never_unfreezes_what_other_restrictions_froze_or_past_the_plan():
    model = model_of("bert")
    strategy = parse_strategy("gradual+emb+freeze1")
    assert strategy.spec() == "freeze1+emb+gradual"
    prepare(strategy, model, TrainPlan(epochs=2, steps_per_epoch=1))
    gradual = strategy.parts[-1]
    gradual.unfreeze(epoch=100, step=100)
    assert trainable_blocks(model) == ["layer2"]  # layer 1 would be next, but only after the plan's 2 epochs
    assert frozen_prefix(model, strategy) == 2


def test_lora_with_gradual_unfreezes_adapters_layer_by_layer():
    model = model_of("bert")
    strategy = parse_strategy("lora+gradual")
    params = prepare(strategy, model, TrainPlan(epochs=2, steps_per_epoch=1))
    assert all(".modules_to_save." in n for n, p in model.named_parameters() if p.requires_grad)
    later = names_of(model, strategy.later_trainable(model))
    assert later and all(".lora_" in n and layer_of(n) == 2 for n in later)
    assert names_of(model, params) == later | {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen_prefix(model, strategy) == 2


class EpochSnapshots(TrainerCallback):
    """Records every parameter at each epoch's end."""

    def __init__(self, model):
        self.model, self.snapshots = model, []

    def on_epoch_end(self, args, state, control, **kwargs):
        self.snapshots.append({n: p.detach().clone() for n, p in self.model.named_parameters()})


def test_gradual_with_a_real_trainer_unfreezes_one_layer_per_epoch(tmp_path):
    torch.manual_seed(0)
    model = model_of("bert")
    strategy = parse_strategy("gradual")
    plan = TrainPlan(epochs=3, steps_per_epoch=2)
    params = prepare(strategy, model, plan)
    optimizer = torch.optim.AdamW(strategy.parameter_groups(model, params, LR) or [{"params": params, "lr": LR}],
                                  weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(5, 50, (8,), generator=generator), "labels": i % 3} for i in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=plan.epochs, per_device_train_batch_size=2,
                             save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    recorder = EpochSnapshots(model)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None),
            callbacks=[*strategy.callbacks(model, plan), recorder]).train()

    states = [initial, *recorder.snapshots]
    moved_in_epoch = [{layer_of(n) for n in initial if not torch.equal(states[e][n], states[e + 1][n])}
                      for e in range(plan.epochs)]
    assert moved_in_epoch == [{None}, {None, 2}, {None, 1, 2}]  # None: the head (and the pooler)
    assert not any(".embeddings." in n for n in initial if not torch.equal(initial[n], states[-1][n]))


# --- names and options ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["bitfit", "lora", "lora:r=4,alpha=8", "freeze6+lora", "llrd:0.8", "gradual:2",
                                  "gradual:steps=50", "lora+gradual", "freeze2+emb+llrd:0.5", "lora:targets=query/key"])
def test_specs_round_trip(text):
    spec = parse_strategy(text).spec()
    assert parse_strategy(spec).spec() == spec


@pytest.mark.parametrize("text, message", [
    ("lora:r=0", "lora needs a rank r >= 1, got 0"),
    ("lora:dropout=1", "lora needs 0 <= dropout < 1"),
    ("llrd:1.5", "llrd needs 0 < decay <= 1, got 1.5"),
    ("llrd:0", "llrd needs 0 < decay <= 1, got 0"),
    ("gradual:epochs=0", "gradual needs epochs >= 1"),
    ("gradual:steps=-1", "gradual needs steps >= 1"),
    ("gradual:epochs=2,steps=5", "gradual takes epochs or steps, not both"),
    ("lora+llrd", "combines 2 methods"),
])
def test_bad_options_are_one_line_user_errors(text, message):
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        parse_strategy(text)
    assert "\n" not in str(caught.value)
