"""Measure how far CIDEr-D moves when the Python PTB port replaces the Java tokenizer (the no-Java fallback).

    python tools/cider_tokenizer_diff.py [--samples 500] [--seeds 5]

Corpora of `--samples` (prediction, 5 references) drawn from tests/eval/captions_corpus.py: its plain and awkward
captions (CAPTIONS) mixed with a given share of the captions the port is known to tokenise differently
(ADVERSARIAL). Prints, per share, the corpus CIDEr-D ×100 with each tokenizer, their difference (mean and largest
over seeds), and the share of samples whose own score changed. docs/metrics.md quotes its output.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mome.eval.metrics import cider_scores, java_tokenizer_available  # noqa: E402
from tests.eval.captions_corpus import ADVERSARIAL, CAPTIONS  # noqa: E402


def corpus(rng: random.Random, n: int, share: float):
    plain = [c for c in CAPTIONS if c.strip()]

    def pick():
        return rng.choice(ADVERSARIAL) if rng.random() < share else rng.choice(plain)

    return [pick() for _ in range(n)], [[pick() for _ in range(5)] for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    if not java_tokenizer_available():
        sys.exit("needs java and pycocoevalcap (the Java PTB tokenizer is the reference)")
    print("| adversarial share | CIDEr-D Java | CIDEr-D Python | mean Δ | max |Δ| | samples changed |")
    print("|---:|---:|---:|---:|---:|---:|")
    for share in (0.0, 0.01, 0.05, 0.2, 1.0):
        java, py, deltas, changed = [], [], [], []
        for seed in range(args.seeds):
            preds, refs = corpus(random.Random(seed), args.samples, share)
            j = cider_scores(preds, refs, tokenize="java")
            p = cider_scores(preds, refs, tokenize="python")
            java.append(100 * sum(j) / len(j))
            py.append(100 * sum(p) / len(p))
            deltas.append(py[-1] - java[-1])
            changed.append(sum(abs(a - b) > 1e-9 for a, b in zip(j, p)) / len(j))
        k = len(deltas)
        print(f"| {share:.0%} | {sum(java) / k:.2f} | {sum(py) / k:.2f} | {sum(deltas) / k:+.3f} | "
              f"{max(abs(d) for d in deltas):.3f} | {100 * sum(changed) / k:.1f} % |")


if __name__ == "__main__":
    main()
