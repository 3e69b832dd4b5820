"""Tokenizers: a thin wrapper over a sentencepiece model, and the tiny preset's BPE made offline.

The tiny tokenizer is trained in memory (< 1 s) on `tiny_corpus()`, a deterministic text built from the words of the
synthetic benchmark (shapes, colours, counts, spatial relations, boxes as text, chart and document words) and the
Vicuna v1 template, with digits split and byte fallback, so any string round-trips and numbers tokenise digit by digit.
The same `Tokenizer` reads a real LLaMA/Vicuna ``tokenizer.model`` (the paper preset).
"""

from __future__ import annotations

import functools
import io
import random
from pathlib import Path

import sentencepiece as spm

__all__ = ["Tokenizer", "tiny_corpus", "TINY_VOCAB_SIZE"]

TINY_VOCAB_SIZE = 1000

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")

_WORDS = {
    "shapes": "circle circles square squares triangle triangles rectangle rectangles star stars ellipse hexagon "
              "diamond cross line lines dot dots shape shapes object objects bar bars",
    "colours": "red green blue yellow orange purple pink brown black white gray grey cyan magenta colour color "
               "colours colors dark light",
    "counts": "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
              "sixteen seventeen eighteen nineteen twenty none many several",
    "relations": "left right above below top bottom middle center centre inside outside behind front next to near "
                 "far between under over on in of at beside corner upper lower",
    "questions": "what which where how many is are there does do the a an this that these those image picture "
                 "photo describe region box bounding coordinates object located find give provide answer short "
                 "word phrase caption sentence please briefly question count color shape size biggest smallest "
                 "largest tallest highest lowest value label axis chart plot graph document text read written "
                 "title page number table row column cell total sum difference year month name date price score "
                 "yes no true false refer referring expression locate output format single",
    "docs": "report invoice form receipt letter memo company amount due address city state date total page "
            "section figure data sales revenue profit cost growth percent rate count units item items list key "
            "apple banana cherry grape lemon mango peach pear plum kiwi alpha beta gamma delta omega north south "
            "east west spring summer autumn winter monday friday january march june september december",
    "template": "USER ASSISTANT chat between curious user and artificial intelligence assistant gives helpful "
                "detailed polite answers to user's questions image",
}


def tiny_corpus(seed: int = 0, lines: int = 4000) -> list[str]:
    """Deterministic training text for the tiny tokenizer: every word in several casings, numbers, boxes, templates."""
    rng = random.Random(seed)
    words = sorted({w for group in _WORDS.values() for w in group.split()})
    out = [SYSTEM, "USER: <image>\nWhat is this? ASSISTANT: A red circle.</s>",
           "USER: <Img>", "</Img>", "What is this? ASSISTANT: ", "A red circle."]
    for w in words:
        out += [w, w.capitalize(), f"{w}.", f"{w}?", f"{w},"]
    for _ in range(lines):
        kind = rng.randrange(4)
        if kind == 0:  # a box as text, Shikra style
            box = ", ".join(f"{rng.random():.3f}" for _ in range(4))
            out.append(f"{rng.choice(words)} {rng.choice(words)} [{box}]")
        elif kind == 1:  # numbers as read from charts and documents
            out.append(f"{rng.choice(words)} {rng.randrange(0, 10000)} {rng.randrange(0, 100)}.{rng.randrange(10)}%")
        else:
            n = rng.randrange(3, 12)
            sent = " ".join(rng.choice(words) for _ in range(n))
            out.append(f"USER: <image>\n{sent.capitalize()}? ASSISTANT: {rng.choice(words)}.")
    return out


@functools.lru_cache(maxsize=2)
def _tiny_model_proto(vocab_size: int) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        num_threads=1,  # one thread: the merges (and so the ids) are deterministic
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",  # keep newlines and case exactly, so decode(encode(s)) == s
        user_defined_symbols=["<image>"],  # never split; MoME replaces it by the visual tokens anyway
        minloglevel=2,
    )
    return buf.getvalue()


class Tokenizer:
    """``encode(text) -> ids`` (no BOS/EOS added), ``decode(ids) -> text``, and the special ids.

    LLaMA's tokenizer has no pad piece; padding then uses the unk id (padded positions are masked anyway)."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.sp.unk_id()

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.model"
        if not path.is_file():
            raise FileNotFoundError(f"no sentencepiece model at {path}")
        return cls(path.read_bytes())

    @classmethod
    def tiny(cls, vocab_size: int = TINY_VOCAB_SIZE) -> "Tokenizer":
        return cls(_tiny_model_proto(vocab_size))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "tokenizer.model"
        path.write_bytes(self.model_proto)
        return path
