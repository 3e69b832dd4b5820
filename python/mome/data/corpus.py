"""The tiny LLM's pretraining text: the synthetic benchmark's world written as text, never its test records.

Each sample is one record of a synthetic dataset (`mome.data.synth`) drawn from the corpus's own seeds
(``mome-llm-corpus/<seed>/<dataset>/<i>``, not the benchmark's ``mome-synth/...``), with the image replaced by its
content as text (`synth.make_record_parts`), in the prompt layout MoME gives the LLM (the release's ``mome``
template)::

    [BOS] "USER: <Img>" <the image as text> "</Img>" "<instruction> ASSISTANT: " <answer> [EOS]

so the text stands exactly where the visual tokens will stand. What the text says:

    scenes     every object left to right, its colour, shape and box as the answers write them:
               ``red circle [0.125, 0.250, 0.406, 0.531]; blue square [...]``  (captions, VQA, REC, REG)
    words      the document's words in reading order: ``train bread ocean table``
    tables     a header line of column names, then a line per row: `` | size | age\\nfox | 54 | 24\\n...``
    charts     each bar's label and value: ``A: 4, B: 7, C: 5``

The questions and answers are the benchmark's own (its templates, its answer forms): so the LLM learns to find the
named object, cell, bar or word in what stands between ``<Img>`` and ``</Img>`` and to write its answer, and the
multimodal stages only have to make the visual tokens say the same. A sample equal to a test record of the
benchmark the default run uses (its content, instruction and answer) is dropped (`test_keys`).
"""

from __future__ import annotations

import random

from mome.data import synth

__all__ = ["Sample", "sample", "samples", "test_keys", "SEED_PREFIX"]

SEED_PREFIX = "mome-llm-corpus"

Sample = tuple[str, str, str, str]  # (dataset, the image as text, instruction, answer)


def sample(seed: int, dataset: str, index: int) -> Sample:
    """Corpus sample ``index`` of ``dataset``: a pure function of the arguments."""
    rng = random.Random(f"{SEED_PREFIX}/{seed}/{dataset}/{index}")
    _, instruction, answer, _, text = synth.make_record_parts(dataset, rng, f"{dataset}-corpus-{index:06d}")
    return dataset, text, instruction, answer


def test_keys(n_test: int = 400, seed: int = 0) -> set[tuple[str, str, str]]:
    """(image as text, instruction, answer) of every test record of the benchmark ``synth.generate(n_test=n_test,
    seed=seed)`` draws (the default run's: 400, seed 0)."""
    keys = set()
    for dataset, count in synth._counts(n_test).items():
        for i in range(count):
            rng = random.Random(f"mome-synth/{seed}/test/{dataset}/{i}")
            _, instruction, answer, _, text = synth.make_record_parts(dataset, rng, f"{dataset}-test-{i:05d}")
            keys.add((text, instruction, answer))
    return keys


def samples(n: int, seed: int = 0, offset: int = 0, exclude: set | None = None) -> list[Sample]:
    """``n`` samples, the datasets in the benchmark's shares (`synth.DATASETS`), indices from ``offset`` on; any
    sample whose (text, instruction, answer) is in ``exclude`` is skipped and the next index taken."""
    out: list[Sample] = []
    for dataset, count in synth._counts(n).items():
        i, taken = offset, 0
        while taken < count:
            s = sample(seed, dataset, i)
            i += 1
            if exclude is not None and s[1:] in exclude:
                continue
            out.append(s)
            taken += 1
    return out
