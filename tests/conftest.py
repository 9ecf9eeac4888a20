"""Shared fixtures: a tiny learnable Chinese dataset and a tiny local BERT, so tests need no network."""

from __future__ import annotations

import gc
import importlib.util
import os
import random
import re

# No test reaches the network: with the hub offline a hub id fails at once instead of after ~45 s of retries.
# Set before anything imports huggingface_hub, which reads it once; subprocesses inherit it.
os.environ["HF_HUB_OFFLINE"] = "1"
# Under pytest-xdist (README: -n 2) each worker gets one thread: two workers of 2 threads each on 2 cores fight
# over them and run many times slower. Set before torch is imported; subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pandas as pd
import pytest

from freezetune.data.splits import Splits

# Each class has its own marker characters; the filler is shared, so a model must find the markers.
MARKERS = {"正面": "好棒赞爱乐喜", "中性": "般常平普还行", "负面": "差烂坏恨糟怒"}
FILLER = "我你他今天游戏这个玩家队友觉得真挺们都很又在也"
# Imbalanced on purpose (正面 is the majority), like real review data.
WEIGHTS = {"正面": 0.5, "中性": 0.3, "负面": 0.2}
SPLIT_SIZES = {"train": 120, "validation": 40, "test": 40}


# Marks of the tests that take tens of seconds each, the longest first: a shared builtin-model fixture (a
# minute and a half on one worker), then tests that start processes.
SLOW_MARKS = ("xdist_group", "distributed", "ray")


# What each optional extra of pyproject.toml brings, by import name. A test that needs an extra the install left
# out is skipped with the extra's name (README's install may be narrower than CI's), never failed.
EXTRAS = {"onnx": ("onnx", "onnxruntime"), "lora": ("peft",), "ray": ("ray",), "serve": ("fastapi", "uvicorn"),
          "modelscope": ("modelscope",), "gemma": ("gguf",), "tensorboard": ("tensorboard",), "mlflow": ("mlflow",),
          "wandb": ("wandb",)}
MARK_EXTRAS = {"ray": "ray"}  # a test marked `ray` needs the ray extra


def _installed(extra: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in EXTRAS[extra])


def _missing_extra(exc: BaseException) -> str | None:
    """The extra whose absence `exc` reports: a failed import of one of its modules, or freezetune's own
    one-line error naming it (`pip install 'freezetune[ray]'`); None when the extra is installed after all."""
    from freezetune.errors import UserError

    extra = None
    if isinstance(exc, ModuleNotFoundError):
        extra = next((e for e, modules in EXTRAS.items() if (exc.name or "").split(".")[0] in modules), None)
    elif isinstance(exc, UserError) and (named := re.search(r"freezetune\[(\w+)\]", str(exc))):
        extra = named[1] if named[1] in EXTRAS else None
    return extra if extra and not _installed(extra) else None


def _skip_for_missing_extra(item):
    try:
        return (yield)
    except Exception as exc:
        if (extra := _missing_extra(exc)) is None:
            raise
        pytest.skip(f"needs the {extra} extra: pip install 'freezetune[{extra}]'")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    for mark, extra in MARK_EXTRAS.items():
        if item.get_closest_marker(mark) and not _installed(extra):
            pytest.skip(f"needs the {extra} extra: pip install 'freezetune[{extra}]'")
    return (yield from _skip_for_missing_extra(item))


pytest_runtest_call = pytest.hookimpl(wrapper=True)(_skip_for_missing_extra)


def pytest_collection_modifyitems(config, items):
    """The slow tests first, longest first (the order is kept otherwise): under xdist both workers start on them
    at once, and the many short tests fill in at the end, instead of one long test running beside an idle worker."""
    def rank(item):
        return next((i for i, mark in enumerate(SLOW_MARKS) if item.get_closest_marker(mark)), len(SLOW_MARKS))

    items.sort(key=rank)


def pytest_collection_finish(session):
    """Every run's Trainer starts with a full garbage collection (accelerate's free_memory), which walks every object
    of the process: 0.3 s or more per run once torch, transformers and the test modules are imported, a third of a
    tiny run. What collection imported lives until the worker exits, so it is moved out of the collector's sight."""
    gc.collect()
    gc.freeze()


def synthetic_frame(n: int, seed: int) -> pd.DataFrame:
    """About `n` rows (exact class proportions) of (sentence, label): 4-10 filler characters with 1-2 markers of the label mixed in."""
    rng = random.Random(seed)
    labels = [label for label, w in WEIGHTS.items() for _ in range(round(n * w))]
    rng.shuffle(labels)
    rows = []
    for label in labels:
        chars = rng.choices(FILLER, k=rng.randint(4, 10)) + rng.choices(MARKERS[label], k=rng.randint(1, 2))
        rng.shuffle(chars)
        rows.append({"sentence": "".join(chars), "label": label})
    return pd.DataFrame(rows)


def tiny_config(tiny_bert, tiny_csv_dir, output_dir, **overrides):
    """A TrainConfig for the tiny model and data, under which the tiny model learns (it predicts all three
    classes), so that a mix-up of prediction order shows in tests."""
    from freezetune import TrainConfig

    settings = dict(output_dir=str(output_dir), model=str(tiny_bert), data=str(tiny_csv_dir), strategy="freeze1",
                    epochs=3, batch_size=4, lr=5e-3, max_length=16)
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def tiny_csv_dir(tmp_path_factory):
    """A folder with train.csv / validation.csv / test.csv (columns sentence,label; string labels)."""
    folder = tmp_path_factory.mktemp("tiny_csv")
    for i, (name, n) in enumerate(SPLIT_SIZES.items()):
        synthetic_frame(n, seed=i).to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def tiny_splits(tiny_csv_dir):
    """The `tiny_csv_dir` data as Splits (label ids = sorted label names), without going through a loader."""
    frames = {name: pd.read_csv(tiny_csv_dir / f"{name}.csv") for name in SPLIT_SIZES}
    names = sorted(frames["train"]["label"].unique())
    as_ids = lambda f: pd.DataFrame({"text": f["sentence"], "label": f["label"].map(names.index)})  # noqa: E731
    return Splits(as_ids(frames["train"]), as_ids(frames["validation"]), as_ids(frames["test"]), names)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 2-layer BERT + BertTokenizer over the synthetic data's characters (a folder path)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    chars = sorted(set(FILLER + "".join(MARKERS.values())))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)  # the same weights in every session, so tests see the same numbers
    BertModel(config).save_pretrained(folder)
    return folder
