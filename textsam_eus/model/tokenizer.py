"""WordPiece tokenizer for the text tower, read from a local ``vocab.txt`` (fully offline).

We use the ``tokenizers`` library's WordPiece directly: transformers 5's ``BertTokenizer(vocab_file=...)``
silently ignores the file, which would tokenise with the wrong vocabulary without any error.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from .weights import CheckpointError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_vocab_path() -> Path:
    """The small vocabulary shipped for the ``tiny`` preset."""
    return Path(str(resources.files("textsam_eus.model") / "assets" / "tiny_vocab.txt"))


class WordPieceTokenizer:
    """Lower-casing BERT WordPiece tokenizer; ``encode(text) -> (ids (context_length,), length)``."""

    def __init__(self, vocab_file: str | Path, context_length: int) -> None:
        from tokenizers import BertWordPieceTokenizer

        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise CheckpointError(f"tokenizer vocabulary not found: {vocab_file} (expected a BERT vocab.txt, "
                                  "one token per line, e.g. the vocab.txt of the BiomedCLIP folder)")
        vocab = [line.rstrip("\n") for line in vocab_file.read_text(encoding="utf-8").splitlines()]
        missing = [t for t in SPECIAL_TOKENS[:4] if t not in vocab]
        if missing:
            raise CheckpointError(f"{vocab_file} is not a BERT vocabulary: missing special tokens {missing}; "
                                  "use the vocab.txt of the BiomedCLIP folder")
        self.vocab_file = vocab_file
        self.vocab_size = len(vocab)
        self.context_length = context_length
        self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=True)
        self.pad_id = vocab.index("[PAD]")
        self.cls_id = vocab.index("[CLS]")
        self.sep_id = vocab.index("[SEP]")

    def encode(self, text: str) -> tuple[torch.Tensor, int]:
        """Token ids padded/truncated to ``context_length`` (with [CLS] ... [SEP]) and the unpadded length."""
        ids = self._tok.encode(text).ids  # includes [CLS] and [SEP]
        if len(ids) > self.context_length:
            ids = ids[: self.context_length - 1] + [self.sep_id]
        length = len(ids)
        ids = ids + [self.pad_id] * (self.context_length - length)
        return torch.tensor(ids, dtype=torch.long), length

    def tokens(self, text: str) -> list[str]:
        return self._tok.encode(text).tokens
