"""Model and tokenizer loading: hub ids, local folders and the builtin offline encoder, one way for all."""

from __future__ import annotations

import pickle
from pathlib import Path

from ..errors import UserError

BUILTIN_PREFIX = "builtin:"


def resolve_model(name: str) -> str:
    """The path or hub id that `from_pretrained` should see for a `--model` value."""
    if name.startswith(BUILTIN_PREFIX):
        from .builtin_e5 import BUILTIN_E5, builtin_e5_path

        if name != BUILTIN_E5:
            raise UserError(f"unknown builtin model '{name}': the builtin model is {BUILTIN_E5}")
        return str(builtin_e5_path())
    return name


def _load(loader, name: str, **kwargs):
    from . import mean_pool  # noqa: F401  registers the mean-pooling head with the Auto classes

    from safetensors import SafetensorError

    source = resolve_model(name)
    try:
        return loader(source, **kwargs)
    except UserError:
        raise
    except SafetensorError as exc:  # a damaged or truncated model.safetensors
        raise UserError(f"cannot load model from {source}: its weights file is damaged ({_first_line(exc)}): "
                        "copy or train the model again") from exc
    except pickle.UnpicklingError as exc:  # a .bin that is not plain tensors: torch.load(weights_only=True) refuses it
        raise UserError(f"cannot load model from {source}: its pytorch_model.bin holds more than weights (code or "
                        "objects) and was refused: use a model saved as safetensors from a source you trust") from exc
    except (OSError, ValueError, KeyError) as exc:
        if source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().exists():
            raise UserError(f"model folder {source} not found: pass an existing folder or a hub id with --model") from exc
        if Path(source).exists():
            raise UserError(f"cannot load model from {source} ({type(exc).__name__}: {_first_line(exc)}): "
                            "it must be a Hugging Face model folder (config.json, weights, tokenizer)") from exc
        raise UserError(
            f"cannot load model '{name}': it is not a local folder and the Hugging Face hub is unreachable "
            "or has no such model; pass a downloaded model folder with --model PATH "
            "(or use the offline default builtin:multilingual-e5-small)"
        ) from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return _load(AutoTokenizer.from_pretrained, name)


def load_model_config(name: str):
    """The model's config only: a cheap check that `name` loads, before slow work that needs the weights."""
    from transformers import AutoConfig

    return _load(AutoConfig.from_pretrained, name)


def load_classifier(name: str, label_names: list[str] | None = None):
    """A sequence classifier; with `label_names` a fresh head of that many classes is attached."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {}
    if label_names is not None:
        kwargs = dict(
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            # A checkpoint that already has a head of another size (e.g. a fine-tuned model) gets a new one.
            ignore_mismatched_sizes=True,
        )
    return _load(AutoModelForSequenceClassification.from_pretrained, name, **kwargs)


def load_trained_classifier(name: str):
    """A sequence classifier whose weights include its head: for prediction, evaluation and export.

    A bare encoder (e.g. bert-base-chinese) loads too, with a randomly initialised head, and would predict
    `LABEL_0`/`LABEL_1` at random; it is refused. Folders written by `freezetune train` always hold the head.
    """
    from transformers import AutoModelForSequenceClassification

    model, info = _load(AutoModelForSequenceClassification.from_pretrained, name, output_loading_info=True)
    missing = sorted(info["missing_keys"])
    if missing:
        raise UserError(f"--model {name} is not a trained classifier: its weights lack {', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''} (the head would predict at random); "
                        "pass a folder written by `freezetune train`, or train one from it")
    return model
