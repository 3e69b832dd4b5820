"""Fixtures made by running the authors' code (OFFICIAL.md § The fixtures).

The folder is ``$MOME_OFFICIAL_FIXTURES`` when set, else the copy in ``tests/official/fixtures``. Every size, seed
and shape a test needs comes from the folder's ``manifest.json``, so the same tests run on any folder of fixtures in
this format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
FIXTURES = Path(os.environ.get("MOME_OFFICIAL_FIXTURES", HERE / "fixtures"))
ATOL = RTOL = 1e-5  # float32 on CPU, as the fixtures were made


def manifest() -> dict:
    path = FIXTURES / "manifest.json"
    if not path.is_file():
        pytest.skip(f"no official fixtures at {FIXTURES} (set MOME_OFFICIAL_FIXTURES)")
    return json.loads(path.read_text())


def fixture(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the manifest entry, its tensors) of one fixture; skips when the folder does not have it."""
    entry = manifest()["fixtures"].get(name)
    if entry is None:
        pytest.skip(f"{FIXTURES}/manifest.json has no fixture {name!r}")
    return entry, load_file(str(FIXTURES / entry["file"]))


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` (kept in the names)."""
    return {k: v for k, v in tensors.items() if k.startswith(prefix)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """max |a − e| ≤ ATOL + RTOL·|e| element-wise, with the worst error in the message."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    err = (actual.double() - expected.double()).abs()
    bound = ATOL + RTOL * expected.double().abs()
    assert bool((err <= bound).all()), f"{name}: max abs error {err.max().item():.3g} (bound {ATOL} + {RTOL}·|ref|)"
