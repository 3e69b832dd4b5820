"""Scale-out of `python -m mome.train`, proven on CPUs with gloo: FSDP with 2 processes equals 1 process (LLM frozen
as in the paper's recipe, and trained), frozen weights sharded too, sharded checkpoints resumed on another world size,
two torchrun "nodes" on loopback, a rank killed mid-run, a hung rank, and a preempted (SIGTERM) job.

Every run is the real CLI on the tiny preset with ADT's dropout off: each process draws its own dropout masks, so
with dropout on N processes are a different (equally valid) random run than 1 process.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mome import checkpoint as ckpt
from tests.train.test_train import BASE, _env, _losses, _train

pytestmark = pytest.mark.slow

FSDP = ["train.strategy=fsdp", "train.device=cpu", "model.vision.adt_dropout=0.0", "train.save_every=2",
        "train.timeout_s=60"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TWO = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "mome.train"]
MEMORY = re.compile(r"parameter memory per rank \(MiB, frozen\+trainable\): (.*)")


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "stage1" / "final" / "model.safetensors")


def _memory(stderr: str) -> list[tuple[float, float]]:
    """(frozen, trainable) MiB per rank, from the run's log."""
    line = MEMORY.search(stderr).group(1)
    return [tuple(float(x) for x in rank.split("+")) for rank in line.split()]


def _assert_same_run(run_dir: Path, reference: Path, exact: bool = False) -> None:
    a, b = _losses(reference), _losses(run_dir)
    assert len(a) == len(b) == 4, (a, b)
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=0 if exact else 1e-6, atol=0)
    wa, wb = _final(reference), _final(run_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        if exact:
            assert torch.equal(wb[k], wa[k]), k
        else:
            # fp32 sums in another order (the all-reduce): a few ulps, more with the pretrained LLM's larger weights
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-5, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_dir):
    """(1 process, 2 FSDP processes) runs of the same config, per `language.train`, made once per module."""
    out = tmp_path_factory.mktemp("fsdp")
    made = {}

    def get(language_train: bool):
        if language_train not in made:
            extra = [*FSDP, f"model.language.train={str(language_train).lower()}"]
            name = f"llm_{'trained' if language_train else 'frozen'}"
            one = _train(out, synth_dir, f"{name}_one", *extra)
            two = _train(out, synth_dir, f"{name}_two", *extra, launcher=TWO)
            made[language_train] = (out / f"{name}_one", one, out / f"{name}_two", two, extra)
        return made[language_train]

    return get


@pytest.mark.parametrize("language_train", [False, True], ids=["llm_frozen", "llm_trained"])
def test_fsdp_two_processes_equal_one_process(runs, language_train):
    one_dir, one, two_dir, two, _ = runs(language_train)
    _assert_same_run(two_dir, one_dir)
    # Every parameter is sharded, the frozen ones too: each rank holds about half of what one process holds.
    [(frozen, trainable)] = _memory(one.stderr)
    per_rank = _memory(two.stderr)
    assert len(per_rank) == 2
    for f, t in per_rank:
        assert f <= 0.55 * frozen and t <= 0.55 * trainable, (per_rank, frozen, trainable)
    assert sum(f for f, _ in per_rank) >= 0.99 * frozen
    # Checkpoints under FSDP are sharded: one shard file per rank, no weights.safetensors gathered on rank 0.
    step2 = ckpt.step_dir(two_dir / "stage1" / "checkpoints", 2)
    manifest = ckpt.verify_checkpoint(step2)
    assert manifest["format"] == "sharded" and not (step2 / "weights.safetensors").exists()
    assert len([f for f in manifest["files"] if f.startswith("shards/")]) == 2
    # ... and the stage still ends with the ordinary save_pretrained folder, equal to the last sharded checkpoint.
    from mome.model import MoME
    from mome.training.checkpointing import load_model

    final = MoME.from_pretrained(two_dir / "stage1" / "final").saved_state()
    last = load_model(ckpt.step_dir(two_dir / "stage1" / "checkpoints", 4)).saved_state()
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)


def test_sharded_checkpoint_resumes_on_another_world_size(runs, tmp_path, synth_dir):
    one_dir, _, two_dir, _, extra = runs(False)
    # 2 → 1: the 2-process run's sharded step-2 checkpoint continued by one process.
    sharded = ckpt.step_dir(two_dir / "stage1" / "checkpoints", 2)
    proc = _train(tmp_path, synth_dir, "two_to_one", *extra, "--resume", str(sharded))
    assert "written by 2 process(es), sharded format" in proc.stderr
    # 1 → 2: the 1-process run's full step-2 checkpoint continued by two FSDP processes.
    full = ckpt.step_dir(one_dir / "stage1" / "checkpoints", 2)
    proc = _train(tmp_path, synth_dir, "one_to_two", *extra, "--resume", str(full), launcher=TWO)
    assert "written by 1 process(es), full format" in proc.stderr
    for name in ("two_to_one", "one_to_two"):
        losses, reference = _losses(tmp_path / name), _losses(one_dir)
        assert len(losses) == 2  # steps 3 and 4
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(reference[2:]), rtol=1e-6, atol=0)
        a, b = _final(one_dir), _final(tmp_path / name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5, msg=lambda m: f"{name} {k}: {m}")


# ---------------------------------------------------------------------------------------------------------------------
# Processes started by hand: each in its own session, killed with its children in a `finally`.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env(), start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def _args(tmp_path, synth_dir, name, *extra) -> list[str]:
    return [*BASE, f"train.name={name}", f"train.out_dir={tmp_path}", f"data.synth_dir={synth_dir}", *extra]


def _wait_for(condition, procs, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert all(p.poll() is None for p in procs), f"the job ended before {what}"
        assert time.time() < deadline, f"never saw {what}"
        time.sleep(0.02)


def _worker(torchrun: subprocess.Popen, rank: int) -> int:
    """The pid of torchrun's worker process with RANK=`rank`."""
    children = Path(f"/proc/{torchrun.pid}/task/{torchrun.pid}/children").read_text().split()
    for pid in children:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no worker with RANK={rank} among {children}")


def test_two_nodes_on_loopback_equal_one_process(runs, tmp_path, synth_dir):
    one_dir, _, _, _, extra = runs(False)
    port = _free_port()
    node = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"mome-{port}", "-m", "mome.train",
            *_args(tmp_path, synth_dir, "nodes", *extra)]
    procs = [_start(node, tmp_path / f"node{i}.log") for i in range(2)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        _stop(procs)
    assert codes == [0, 0], "\n".join((tmp_path / f"node{i}.log").read_text()[-3000:] for i in range(2))
    log = (tmp_path / "node0.log").read_text() + (tmp_path / "node1.log").read_text()
    assert "world size 2" in log
    _assert_same_run(tmp_path / "nodes", one_dir)


def test_a_killed_rank_ends_the_job_and_resume_continues(runs, tmp_path, synth_dir):
    _, _, two_dir, _, extra = runs(False)
    args = _args(tmp_path, synth_dir, "killed", *extra, "train.save_every=1")
    job = _start([*TWO, *args], tmp_path / "killed.log")
    try:
        first = ckpt.step_dir(tmp_path / "killed" / "stage1" / "checkpoints", 1) / ckpt.MANIFEST
        _wait_for(first.exists, [job], "checkpoint step 1")
        os.kill(_worker(job, 1), signal.SIGKILL)
        killed_at = time.time()
        code = job.wait(timeout=120)
        took = time.time() - killed_at
    finally:
        _stop([job])
    log = (tmp_path / "killed.log").read_text()
    assert code != 0, log[-3000:]
    assert took < 60, f"the job took {took:.0f} s to end after a rank was killed"
    assert not (tmp_path / "killed" / "stage1" / "final").exists(), "the kill landed after the run finished"
    resumed = _train(tmp_path, synth_dir, "killed", *extra, "train.save_every=1", "--resume", "auto", launcher=TWO)
    assert "resumed from" in resumed.stderr
    # Same world size: the continuation is the uninterrupted run's, to the bit.
    wa, wb = _final(two_dir), _final(tmp_path / "killed")
    for k in wa:
        assert torch.equal(wb[k], wa[k]), k


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hung_rank_fails_the_others_after_the_timeout(tmp_path, synth_dir):
    # A stopped process keeps its connections open: only the collective timeout (train.timeout_s) ends the wait.
    # torchrun then stops the job, giving the hung worker 30 s to exit first; that part is torchrun's and not waited
    # for here.
    timeout_s = 10
    args = _args(tmp_path, synth_dir, "hung", *FSDP, "train.save_every=1", f"train.timeout_s={timeout_s}")
    job = _start([*TWO, *args], tmp_path / "hung.log")
    rank1 = None
    try:
        first = ckpt.step_dir(tmp_path / "hung" / "stage1" / "checkpoints", 1) / ckpt.MANIFEST
        _wait_for(first.exists, [job], "checkpoint step 1")
        rank0, rank1 = _worker(job, 0), _worker(job, 1)
        os.kill(rank1, signal.SIGSTOP)
        stopped_at = time.time()
        while _running(rank0) and time.time() < stopped_at + timeout_s + 60:
            time.sleep(0.1)
        took = time.time() - stopped_at
    finally:
        _stop([job])
        if rank1 is not None and _running(rank1):  # a stopped worker outlives torchrun: do not leak it
            os.kill(rank1, signal.SIGKILL)
    log = (tmp_path / "hung.log").read_text()
    assert not _running(rank0), f"rank 0 still waits {took:.0f} s after rank 1 stopped"
    assert took < timeout_s + 30, took
    assert f"Timed out waiting {timeout_s * 1000}ms" in log, log[-3000:]


def test_sigterm_saves_a_checkpoint_and_resume_continues(runs, tmp_path, synth_dir):
    _, _, two_dir, _, extra = runs(False)
    args = _args(tmp_path, synth_dir, "preempted", *extra, "train.save_every=100")
    job = _start([*TWO, *args], tmp_path / "preempted.log")
    metrics = tmp_path / "preempted" / "metrics.jsonl"
    try:
        _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, [job], "step 1")
        os.kill(job.pid, signal.SIGTERM)  # what a scheduler does: torchrun forwards it to every worker
        code = job.wait(timeout=120)
    finally:
        _stop([job])
    log = (tmp_path / "preempted.log").read_text()
    assert code != 0, log[-3000:]
    assert "SIGTERM; checkpoint saved at step" in log, log[-3000:]
    saved = ckpt.latest_checkpoint(tmp_path / "preempted" / "stage1" / "checkpoints")
    assert saved is not None and 1 <= saved.step < 4  # not a periodic save (every 100): the preemption's
    resumed = _train(tmp_path, synth_dir, "preempted", *extra, "train.save_every=100", launcher=TWO)
    assert f"at step {saved.step}" in resumed.stderr
    wa, wb = _final(two_dir), _final(tmp_path / "preempted")
    for k in wa:
        assert torch.equal(wb[k], wa[k]), k
