"""Reference: training tokens/s of a nanoGPT-style GPT-2 in PyTorch, for train_throughput.py.

The peer a researcher would otherwise use: pre-LayerNorm blocks with biases, GELU MLP (4·d),
learned positions, tied input/output embedding, causal attention by PyTorch's fused
`scaled_dot_product_attention`, AdamW, float32, one process on all cores. Needs only torch
(run it with a Python that has it); prints one JSON line per size.

    python benchmarks/nanogpt_torch.py --sizes 64:2:2,128:4:2 [--seconds 8]
    python benchmarks/nanogpt_torch.py --serve    # then lines like "64:2:2 2.5" on stdin
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, d: int, layers: int, heads: int, vocab: int, context: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied, as in nanoGPT
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = (
                    0.02 / (2 * layers) ** 0.5
                    if name.endswith(("proj.weight", "out.weight"))
                    else 0.02
                )
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def make_timer(d: int, layers: int, heads: int, batch: int, context: int, vocab: int):
    """A function of seconds that trains the model for about that long and returns its figures
    (the model, optimizer and data are built once, and two warm-up steps run first)."""
    torch.manual_seed(0)
    model = GPT(d, layers, heads, vocab, context)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-3
    )
    data = torch.randint(0, vocab, (2_000_000,))
    gen = torch.Generator().manual_seed(0)

    def step():
        ix = torch.randint(len(data) - context - 1, (batch,), generator=gen)
        x = torch.stack([data[i : i + context] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + context] for i in ix])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(2):
        step()

    def timer(seconds: float) -> dict:
        n, t0 = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - t0 < seconds:
            step()
            n += 1
        dt = (time.perf_counter() - t0) / n
        return {"d_model": d, "tokens_per_s": batch * context / dt, "step_s": dt, "steps": n}

    return timer


def serve(args: argparse.Namespace) -> None:
    """Answer requests `d_model:layers:heads seconds` on stdin, one JSON line each, keeping
    each size's model: a caller can alternate short rounds with its own measurements."""
    timers = {}
    for line in sys.stdin:
        spec, seconds = line.split()
        if spec not in timers:
            d, layers, heads = map(int, spec.split(":"))
            timers[spec] = make_timer(d, layers, heads, args.batch, args.context, args.vocab)
        print(json.dumps(timers[spec](float(seconds))), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="", help="d_model:layers:heads,...")
    ap.add_argument("--serve", action="store_true", help="answer 'd:L:H seconds' lines on stdin")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=256)
    args = ap.parse_args()
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    if args.serve:
        return serve(args)
    for spec in filter(None, args.sizes.split(",")):
        d, layers, heads = map(int, spec.split(":"))
        timer = make_timer(d, layers, heads, args.batch, args.context, args.vocab)
        print(json.dumps(timer(args.seconds)), flush=True)


if __name__ == "__main__":
    main()
