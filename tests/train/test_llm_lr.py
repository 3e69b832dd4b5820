"""`train.stageN.llm_lr`: the LLM's own weights at their own peak lr; everything else (MoLE included) at `lr`."""

import pytest

from mome.model.config import MoMEConfig
from mome.model.mome import MoME
from mome.schedule import WarmupCosine
from mome.train import ConfigError, StageConfig, resolve_config
from mome.training.loop import make_optimizer


def _model():
    return MoME(MoMEConfig.preset("tiny", {"language.path": None, "language.train": True, "vision.use": ["dinov2"],
                                           "vision.dinov2.path": None}))


def _lr_of(opt):
    return {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}


def test_llm_weights_get_llm_lr_and_the_rest_lr():
    model = _model()
    opt = make_optimizer(model, StageConfig(lr=1e-3, llm_lr=1e-4))
    lr = _lr_of(opt)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    llm = [n for n in named if n.startswith("llm.") and ".mole." not in n]
    mole = [n for n in named if ".mole." in n]
    assert llm and mole
    assert all(lr[id(named[n])] == 1e-4 for n in llm)
    assert all(lr[id(named[n])] == 1e-3 for n in named if n not in llm)
    assert len(lr) == sum(p.requires_grad for p in model.parameters())
    sched = WarmupCosine(opt, total_steps=10, warmup_steps=2)
    assert sorted({g["lr"] for g in opt.param_groups}) == [5e-5, 5e-4]  # both at half their peak after step 0
    sched.step()
    assert sorted({g["lr"] for g in opt.param_groups}) == [1e-4, 1e-3]


def test_without_llm_lr_the_groups_are_as_before():
    model = _model()
    opt = make_optimizer(model, StageConfig(lr=1e-3))
    assert len(opt.param_groups) == 2  # decay, no decay: optimizer states of older checkpoints still load
    assert {g["lr"] for g in opt.param_groups} == {1e-3}


def test_bad_llm_lr_is_refused():
    with pytest.raises(ConfigError, match="train.stage2.llm_lr"):
        resolve_config(None, ["train.stage2.llm_lr=0"])
