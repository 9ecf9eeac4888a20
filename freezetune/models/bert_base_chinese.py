"""`bert-base-chinese` without the hub: its exact tokenizer and architecture ship with freezetune, its weights do not.

The notebook tokenizes with `bert-base-chinese` and fine-tunes its pretrained weights. Where the hub is
unreachable and nothing is in the HF cache, `freezetune.models` falls back to what is here:

- the tokenizer, rebuilt from Google's vocabulary file (`assets/bert-base-chinese/`, see its NOTICE) with the
  hub tokenizer's settings, so it gives the hub tokenizer's ids;
- the architecture, `BertConfig()`'s defaults with this vocabulary (the hub's config.json describes the same
  model), which `init="random"` trains from random weights.

The pretrained weights are not installable without the hub: asking for them is a `UserError` naming the ways out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import UserError

NAMES = ("bert-base-chinese", "google-bert/bert-base-chinese")  # the old and the current hub id of one repository
VOCAB_FILE = Path(__file__).parent / "assets" / "bert-base-chinese" / "vocab.txt"
VOCAB_SIZE = 21128
VOCAB_MD5 = "3b5b76c4aef48ecf8cb3abaafe960f09"
VOCAB_SHA256 = "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"
# The hub tokenizer's tokenizer_config.json, {"do_lower_case": false, "model_max_length": 512}. BertTokenizer's
# own default lowercases, which changes nothing in the notebook's examples but does change Latin text: the
# vocabulary's Latin words are all lower case, so the hub tokenizer maps upper-case words ("GDP") to [UNK].
HUB_TOKENIZER_SETTINGS = {"do_lower_case": False, "model_max_length": 512}


def is_bert_base_chinese(name: str) -> bool:
    return name in NAMES


def vocab_file() -> Path:
    """The shipped vocabulary, refused unless it is byte for byte Google's file (a wrong file gives wrong ids silently)."""
    reinstall = "reinstall freezetune (pip install --force-reinstall --no-deps freezetune)"
    try:
        data = VOCAB_FILE.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the shipped bert-base-chinese vocabulary {VOCAB_FILE} ({e.strerror}); {reinstall}") from None
    if hashlib.md5(data).hexdigest() != VOCAB_MD5 or hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise UserError(f"{VOCAB_FILE} is damaged or altered (checksum mismatch with Google's vocabulary); {reinstall}")
    return VOCAB_FILE


def shipped_tokenizer():
    """bert-base-chinese's tokenizer from the shipped vocabulary: the notebook's ids, without the hub."""
    from transformers import BertTokenizer  # tokenizers-backed (the fast one) in transformers 5, as from the hub

    return BertTokenizer(str(vocab_file()), **HUB_TOKENIZER_SETTINGS)


def architecture_config(**kwargs):
    """bert-base-chinese's architecture without the hub: 12 layers, hidden 768, 12 heads, FFN 3072, 512 positions,
    2 token types (`BertConfig()`'s defaults) and the 21,128-token vocabulary. `kwargs` as for `from_pretrained`."""
    from transformers import BertConfig

    return BertConfig(vocab_size=VOCAB_SIZE, **kwargs)


def weights_unavailable(name: str) -> UserError:
    return UserError(
        f"the pretrained weights of {name} are not available offline (the Hugging Face hub cannot be reached and they "
        "are not in the HF cache): connect to the network once to download them, or pass a downloaded model folder "
        "with --model PATH; or add --init random to train the exact bert-base-chinese architecture from random "
        "weights (not pretrained: expect much lower scores)"
    )
