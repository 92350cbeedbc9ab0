"""Decode steps and the SSM layer: ssm_step against the full scan, nn.SSM against the einsum
layer (outputs and gradients), and a short training run whose loss must fall."""
import subprocess
import sys
import os

import pytest
import torch

from conftest import DEVICES, TOL, make_inputs
from nanossm import ssm_scan, ssm_step
from nanossm.nn import SSM
from nanossm.reference import rel_err, ssm_scan_sequential


@pytest.mark.parametrize("device", DEVICES)
def test_step_equals_last_step_of_the_scan(device):
    dtypes = [torch.float32, torch.float64] if device == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    for dtype in dtypes:
        A, x = make_inputs((2, 41, 3, 8), dtype, device, seed=40)
        full = ssm_scan(A, x)
        _, state = ssm_scan(A[:, :-1], x[:, :-1], return_final_state=True)
        log_a = A[:, -1] - A[:, -2]
        new = ssm_step(state, log_a, x[:, -1])
        assert new.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert rel_err(new, full[:, -1]) <= TOL[dtype]
        # in place, and stepping on from there matches the scan extended by one step
        same = ssm_step(state, log_a, x[:, -1], inplace=True)
        assert same is state and torch.equal(state, new)


@pytest.mark.parametrize("device", DEVICES)
def test_steps_from_zero_replay_the_scan(device):
    A, x = make_inputs((1, 12, 2, 4), torch.float32, device, seed=41)
    full = ssm_scan(A, x)
    state = torch.zeros(1, 2, 4, device=device)
    prev = torch.zeros_like(A[:, 0])
    for t in range(12):
        ssm_step(state, A[:, t] - prev, x[:, t], inplace=True)
        prev = A[:, t]
        assert rel_err(state, full[:, t]) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_layer_matches_naive(device):
    torch.manual_seed(0)
    fast = SSM(12, n_heads=3, d_state=5, impl="nanossm").to(device)
    naive = SSM(12, n_heads=3, d_state=5, impl="naive").to(device)
    naive.load_state_dict(fast.state_dict())
    u = torch.randn(2, 90, 12, device=device)
    g = torch.randn(2, 90, 12, device=device)
    y1, y2 = fast(u), naive(u)
    assert rel_err(y1, y2) <= 1e-5
    y1.backward(g)
    y2.backward(g)
    for (n, p1), p2 in zip(fast.named_parameters(), naive.parameters()):
        assert rel_err(p1.grad, p2.grad) <= 1e-4, n
    with pytest.raises(ValueError, match="impl: expected 'nanossm' or 'naive'"):
        SSM(4, impl="fast")


def test_training_demo_loss_falls():
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "python"))
    p = subprocess.run([sys.executable, "-m", "nanossm.train_demo", "--steps", "300", "--device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]  # "loss A -> B (Nx lower) on cpu"
    first, final = float(last.split()[1]), float(last.split()[3])
    assert final < 0.5 * first, last


@pytest.mark.parametrize("device", DEVICES)
def test_demo_checks_and_times(device):
    """A smoke test of the demo the README's first command ends in: its check passes and it
    prints its three timings. (One chunk: the look-back is tests/test_scan.py's.)"""
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "python"))
    p = subprocess.run([sys.executable, "-m", "nanossm.demo", "--device", device, "--shape", "2,64,4,8"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "(OK, tol 1e-5)" in p.stdout, p.stdout
    lines = p.stdout.splitlines()
    for what in ("nanossm.ssm_scan", "sequential loop", "copy of x (floor)"):
        timing = [ln for ln in lines if ln.startswith(what)]
        assert len(timing) == 1 and float(timing[0][len(what):].split()[0]) > 0, (what, p.stdout)
    ratio = [ln for ln in lines if "scan / copy =" in ln]
    assert len(ratio) == 1 and float(ratio[0].split("=")[-1].strip(" )")) > 0, p.stdout
