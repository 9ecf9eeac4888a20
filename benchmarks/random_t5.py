"""An encoder-decoder stand-in for the families benchmark: a small T5 with random weights and bert-base-chinese's
vocabulary (shipped with freezetune), saved as a model folder that `--model` takes.

No pretrained Chinese encoder-decoder can be had offline here, so this measures what the family costs and that
every strategy runs on it, not what pretraining buys: its accuracy is that of a model trained from scratch.

    python benchmarks/random_t5.py runs/t5-random   # then --models ...,runs/t5-random
"""

from __future__ import annotations

import argparse

import torch
from transformers import BertTokenizerFast, T5Config, T5ForSequenceClassification

from freezetune.models.bert_base_chinese import VOCAB_FILE


def build(folder: str, layers: int = 4, width: int = 256, seed: int = 0) -> None:
    tokenizer = BertTokenizerFast(vocab_file=str(VOCAB_FILE), do_lower_case=False, tokenize_chinese_chars=True)
    # T5's classifier reads the representation of the last end-of-sequence token: BERT's [SEP] plays that part.
    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_ff=4 * width, d_kv=width // 4, num_heads=4,
                      num_layers=layers, num_decoder_layers=layers, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      num_labels=2)
    torch.manual_seed(seed)
    T5ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--layers", type=int, default=4, help="blocks per stack (encoder and decoder)")
    args = parser.parse_args()
    build(args.folder, args.layers)
    print(f"wrote {args.folder}")
