"""python -m nanossm.train_demo: train nanossm.nn.SSM for a few hundred steps on a synthetic
long-memory task (predict an exponentially decayed running sum of the input, at two time
scales) and print the loss falling. GPU if usable, else CPU."""
import argparse

import torch

from nanossm.nn import SSM


def batch(B, T, d, device, gen):
    u = torch.randn(B, T, d, generator=gen).to(device)
    t = torch.arange(T, dtype=torch.float32)
    target = []
    for decay in (0.9, 0.99):  # y_t = sum_j decay^(t-j) u_j[0], scaled to unit size
        w = torch.tril(decay ** (t[:, None] - t[None, :]))
        target.append((w.to(device) @ u[..., 0:1]) * (1 - decay) ** 0.5)
    return u, torch.cat(target, -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--impl", default="nanossm")
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    d, B, T = 16, 8, 256
    model = torch.nn.Sequential(SSM(d, n_heads=8, d_state=8, impl=args.impl), torch.nn.Linear(d, 2)).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(args.steps + 1):
        u, y = batch(B, T, d, args.device, gen)
        loss = torch.nn.functional.mse_loss(model(u), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    print(f"loss {first:.4f} -> {loss.item():.4f} ({first / loss.item():.1f}x lower) on {args.device}")


if __name__ == "__main__":
    main()
