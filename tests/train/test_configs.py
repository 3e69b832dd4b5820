"""Every shipped run config resolves (keys known, values valid) and encodes the recipe and ablation it names."""

from pathlib import Path

import pytest

from mome.train import DEFAULT_RUN, resolve_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


def test_configs_exist():
    assert len(CONFIGS) >= 17  # paper, its two stages, 6 rows of Table 1, 8 rows of Table 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_resolves(path):
    run, model = resolve_config(str(path), [])
    t = run.train
    # The paper's recipe (PAPER.md, Training): batch 64, 30k steps, AdamW (0.9, 0.999), wd 0.05, warm-up 1000 to 5e-4.
    assert t.global_batch_size == 64
    for stage in (t.stage1, t.stage2):
        assert (stage.steps, stage.lr, stage.warmup_steps, stage.min_lr) == (30000, 5e-4, 1000, 0.0)
        assert stage.betas == [0.9, 0.999] and stage.weight_decay == 0.05
    assert not model.language.train  # the paper keeps the LLM frozen
    assert model.vision.adt_layers == 6 and model.vision.num_tokens == 256
    assert t.grad_clip == 0.0  # as released: no clipping
    assert "clip" not in model.vision.use  # the tables' "CLIP" is EVA-CLIP, not OpenAI CLIP
    if "clip" in path.stem:
        assert model.vision.use == ["eva_clip"]
    if 2 in t.stages:
        assert t.batch_sizes(2)[0] == 16  # as released: stage 2 trains at batch 16


def test_table_rows():
    by_name = {p.stem: resolve_config(str(p), [])[1] for p in CONFIGS}
    assert by_name["t1_move_adt_router"].vision.router == "soft"
    assert by_name["t1_move_adt_add"].vision.router == "add"
    assert by_name["t1_move_avgpool_add"].vision.aggregator == "avgpool"
    assert by_name["t2_clip_mole_t"].mole.router == "token"
    assert by_name["t2_clip_mole_it"].mole.router == "instance_token"
    assert by_name["t2_clip_mole_i_gs"].mole.gumbel
    assert by_name["t2_clip_mole_i_lb"].mole.load_balance > 0
    assert by_name["t2_mome"].mole.router == "instance" and by_name["t2_mome"].num_experts == 4


def test_default_run_trains_the_tiny_llm():
    run, model = resolve_config(None, [])
    assert DEFAULT_RUN["preset"] == "tiny" and model.language.train  # random tiny LLM must learn language
    assert run.data.train == "synth"


@pytest.mark.parametrize("name", ["paper", "paper_stage1", "paper_stage2"])
def test_paper_configs_batch_as_released(name):
    # OFFICIAL.md: each step's batch from one of the four files in turn; global batch 64 in stage 1, 16 in stage 2.
    run, _ = resolve_config(str(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"), [])
    assert run.data.batching == "one_group"
    assert [run.train.batch_sizes(s)[0] for s in (1, 2)] == [64, 16]
    for stage in (1, 2):
        global_batch, micro = run.train.batch_sizes(stage)
        assert global_batch % (micro * 8) == 0  # the 8-GPU launch in the config's header divides it


def test_default_run_batching_and_switch():
    run, _ = resolve_config(None, [])
    assert run.data.batching == "one_group"  # the release's batching is the default; mixed is our switch
    assert run.train.batch_sizes(1) == run.train.batch_sizes(2) == (16, 16)
    run, _ = resolve_config(None, ["data.batching=mixed", "train.stage2.global_batch_size=8",
                                   "train.stage2.micro_batch_size=4"])
    assert run.data.batching == "mixed" and run.train.batch_sizes(2) == (8, 4) and run.train.batch_sizes(1) == (16, 16)
    from mome.configtree import ConfigError
    with pytest.raises(ConfigError, match="data.batching"):
        resolve_config(None, ["data.batching=random"])
    with pytest.raises(ConfigError, match="train.stage2.global_batch_size"):
        resolve_config(None, ["train.stage2.global_batch_size=0"])


def test_training_batches_one_group_per_optimizer_step(tmp_path):
    """train.Batches (what train_stage draws from): with global batch 8 as 2 ranks x micro 2 x accumulation 2, each
    optimizer step's 8 records are from one group, in turn, and equal a single process's micro-batches of 4."""
    from mome import distributed
    from mome.data import load_records, synth
    from mome.train import Batches

    synth.generate(tmp_path, n_train=40, n_test=4, seed=0)
    records = load_records(tmp_path / "train.jsonl")
    run, model_cfg = resolve_config(None, [])

    def draw(world_size, rank, micro, steps):
        env = distributed.Dist(rank=rank, world_size=world_size)
        b = Batches(records, tmp_path, model_cfg, run, env, seed=1, global_batch_size=8, micro_batch_size=micro)
        return [[r["id"] for r in b.next()["records"]] for _ in range(steps * 8 // (micro * world_size))]

    r0, r1 = draw(2, 0, 2, 6), draw(2, 1, 2, 6)
    single = draw(1, 0, 4, 6)
    group = {r["id"]: r["group"] for r in records}
    steps = []
    for s in range(6):
        ids = r0[2 * s] + r1[2 * s] + r0[2 * s + 1] + r1[2 * s + 1]
        assert ids == single[2 * s] + single[2 * s + 1]  # world size 2 = world size 1, micro-batch by micro-batch
        assert len({group[i] for i in ids}) == 1
        steps.append(group[ids[0]])
    assert steps == ["general", "rec", "reg", "document", "general", "rec"]
    resumed = Batches(records, tmp_path, model_cfg, run, distributed.Dist(rank=1, world_size=2), seed=1,
                      global_batch_size=8, micro_batch_size=2, consumed=3 * 2 * 2)  # resume at step 3
    assert [r["id"] for r in resumed.next()["records"]] == r1[6]


def test_weight_decay_follows_the_release():
    """Decayed: weight matrices (MoLE's stacked (K, D, R) ones too), ADT's reference points and query position
    embeddings; not decayed: 1-d tensors, biases (MoLE's stacked (K, ·) ones too), adapter scales."""
    from mome.model import MoME, MoMEConfig
    from mome.train import StageConfig, make_optimizer

    model = MoME(MoMEConfig.preset("tiny", ["language.train=false"]))
    decay, no_decay = make_optimizer(model, StageConfig()).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)].rsplit(".", 1)[-1] for p in decay["params"]}
    kept = {names[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]}
    assert decayed == {"weight", "w_down", "w_up", "reference", "query_pos"}
    assert kept == {"bias", "b_down", "b_up", "scale", "weight"}  # "weight": LayerNorms (1-d)
    assert all(p.ndim == 1 for p in no_decay["params"] if names[id(p)].endswith(".weight"))
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
