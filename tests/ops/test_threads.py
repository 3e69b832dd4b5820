"""The CPU kernels' thread pool (cpp/common/parallel.cpp): the same bits with any number of threads, from several
Python threads at once (the pool runs one job; the others run inline) and in a forked child (a DataLoader worker),
which gets a pool of its own instead of waiting on the parent's threads."""

import multiprocessing
import threading

import torch

from mome import ops
from tests.ops.cases import deform_inputs


def _inputs():
    # Big enough that every kernel splits its work (grains of ~32k multiply-adds). Drawn once: the global generator
    # must not be shared by concurrent callers.
    torch.manual_seed(1)
    deform = deform_inputs([(16, 16), (8, 8)], B=2, Q=64, H=4, D=32, P=4, dtype=torch.float32)
    return deform, torch.randn(3, 4, 96, 64), torch.rand(4, 3)


INPUTS = _inputs()


def _work():
    deform, f, w = INPUTS
    v, s, i, loc, a = (t.clone().requires_grad_(t.is_floating_point()) for t in deform)
    out = ops.deform_attn(v, s, i, loc, a)
    grads = torch.autograd.grad(out, (v, loc, a), torch.ones_like(out))
    f, w = f.clone().requires_grad_(), w.clone().requires_grad_()
    mixed = ops.router_mix(f, w)
    return [out.detach(), *grads, mixed.detach(), *torch.autograd.grad(mixed, (f, w), torch.ones_like(mixed))]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_thread_count_and_concurrent_callers_do_not_change_bits():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected = _work()
        torch.set_num_threads(4)
        assert _same(_work(), expected)
        results = [None] * 4
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, _work())) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r is not None and _same(r, expected) for r in results)
    finally:
        torch.set_num_threads(before)


def _mix_with_pool(f, w, threads):
    """router_mix's forward launcher called directly with `threads`: torch's own thread count plays no part."""
    from mome.ops import _library

    out = f.new_empty(f.shape[1:])
    N, B, L, D = f.shape
    _library._C.router_mix_forward_cpu(_library.DTYPE_TAG[f.dtype], f.data_ptr(), w.data_ptr(), out.data_ptr(), N, B,
                                       L * D, threads)
    return out


def _child(queue):
    # As in a DataLoader worker: torch's OpenMP pool is not usable after a fork once the parent has used it (libgomp
    # hangs), so torch runs one thread; the core's pool is the process's own and runs 4.
    torch.set_num_threads(1)
    _, f, w = INPUTS
    queue.put(_mix_with_pool(f, w, 4).tolist())


def test_forked_child_runs_the_kernels():
    _, f, w = INPUTS
    expected = _mix_with_pool(f, w, 4)  # the parent's pool has started its threads
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert torch.equal(torch.tensor(got, dtype=f.dtype), expected)
    torch.testing.assert_close(expected, ops.reference.router_mix(f, w))
