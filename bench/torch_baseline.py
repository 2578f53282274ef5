#!/usr/bin/env python3
"""The baseline for `hydra train`'s speed: the same dense HYDRA model in plain PyTorch.

A user choosing a trainer compares hydra with what a few hundred lines of PyTorch give. This
file is those lines, written from docs/MODEL.md: the MQA/GQA/MHA, CCQA (either layout:
model.ccqa.compress) and MLA layers of the pattern, SwiGLU, pre-norm residuals with the
per-type scale, the padded vocabulary, mean cross entropy. Dense only (MoD off, one recursion):
the configs the speed targets name. Parameter names and shapes are hydra's, so a consolidated
hydra checkpoint loads into it (load_hydra_h5) and the equivalence tests (ctest
model_matches_torch_reference and model_matches_torch-heads_reference:
tests/model/check_spec_reference.py) check the loss against hydra's.

The timed step is what a PyTorch user writes: fp32 parameters, autocast to bf16, fused AdamW
(decay on matrices and embeddings), global-norm clipping at 1.0, in three modes run in the
same process one after the other: eager, torch.compile, torch.compile(mode="reduce-overhead").

  python3 bench/torch_baseline.py --config configs/small.yaml --batch 8 --seq-len 1024 \
      --modes eager,compile,reduce-overhead --json out.json [--flops-per-token F]

Each mode prints one JSON row: tok_s, step_ms (median of the timed steps), peak_gb
(torch.cuda.max_memory_allocated) and peak_reserved_gb (what the caching allocator held: the
closer match to hydra's mem_gb, which is the device's used memory), mfu when
--flops-per-token (hydra info --json) is given.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

H200_PEAK_BF16 = 989e12  # dense bf16 FLOP/s of an H100/H200 SXM, the MFU denominator hydra uses


# --------------------------------------------------------------------------------------------
# Configuration: the model section of a hydra YAML config (only what the dense model reads).
def model_config(path, overrides=()):
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    m = dict(doc.get("model", {}))
    for item in overrides:  # key=value under model. (dotted: mod.enabled=false), as hydra's --set model.key=value
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = m
        for part in parents:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    ccqa = {"compression": 4, "compress": "heads", "conv_kernel": 3, "use_convs": True, "qk_mean": True,
            "qk_mean_gain": 0.25, "value_shift": True, "post_mix_norm": True, "residual_scale": 0.5,
            **m.get("ccqa", {})}
    mla = {"latent_ratio": 0.5, "residual_scale": 0.5, **m.get("mla", {})}
    mqa = {"residual_scale": 1.0, **m.get("mqa", {})}
    gqa = {"residual_scale": 1.0, **m.get("gqa", {})}  # gqa and mha layers
    if m.get("mod", {}).get("enabled", False) or m.get("mor", {}).get("recursions", 1) != 1:
        sys.exit(f"{path}: the baseline is the dense model: set model.mod.enabled=false and model.mor.recursions=1")
    return {
        "dim": m["dim"], "heads": m["heads"], "kv_heads": m["kv_heads"], "mlp_ratio": m.get("mlp_ratio", 4.0),
        "macro_blocks": m["macro_blocks"],
        "pattern": m.get("pattern", ["mqa", "mqa", "ccqa", "ccqa", "ccqa", "mla", "mqa", "mla"]),
        "vocab_size": m["vocab_size"], "tie_embeddings": m.get("tie_embeddings", False),
        "init_std": m.get("init_std", 0.02), "rope_theta": m.get("rope_theta", 10000.0),
        "norm_eps": m.get("norm_eps", 1e-6), "ccqa": ccqa, "mla": mla, "mqa": mqa, "gqa": gqa,
    }


def round_up(x, multiple):
    return (x + multiple - 1) // multiple * multiple


# --------------------------------------------------------------------------------------------
# Building blocks (docs/MODEL.md, "Notation" and "Layer").
def rms_norm(x, weight, eps):
    # The mean square in fp32 when x is bf16/fp16, as hydra does.
    xf = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def head_rms_norm(x, weight, head_size, eps):
    """RMSNorm over each head's own channels of x [..., H*hs] with weight [H*hs]."""
    shape = x.shape
    xs = x.view(*shape[:-1], -1, head_size)
    return rms_norm(xs, weight.view(-1, head_size), eps).view(shape)


def rope(x, theta):
    """Rotate-half RoPE over the last dim of x [B, S, heads, D] at positions 0..S-1."""
    S, D = x.shape[1], x.shape[-1]
    half = D // 2
    angle_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, half, dtype=angle_dtype, device=x.device) * (2.0 / D))
    angles = torch.arange(S, dtype=angle_dtype, device=x.device)[:, None] * inv_freq  # [S, D/2]
    cos = angles.cos().to(x.dtype)[None, :, None, :]
    sin = angles.sin().to(x.dtype)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def causal_attention(q, k, v, scale):
    """q [B, S, H, D], k [B, S, Hkv, D], v [B, S, Hkv, Dv]; query head h uses KV head h // (H / Hkv)."""
    group = q.shape[2] // k.shape[2]
    if group > 1:
        k = k.repeat_interleave(group, dim=2)
        v = v.repeat_interleave(group, dim=2)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if hasattr(F, "scaled_dot_product_attention") and q.is_cuda:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    else:  # LibTorch 1.13's Python (Debian) has no SDPA; float64 on the CPU for the test
        scores = (q @ k.transpose(-1, -2)) * scale
        if scores.dtype != torch.float64:
            scores = scores.float()
        S = q.shape[2]
        future = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)
        out = scores.masked_fill(future, float("-inf")).softmax(-1).to(q.dtype) @ v
    return out.transpose(1, 2)


def linear(fan_in, fan_out):
    return nn.Linear(fan_in, fan_out, bias=False)


class Mlp(nn.Module):  # SwiGLU
    def __init__(self, E, Fw):
        super().__init__()
        self.w_gate, self.w_up, self.w_down = linear(E, Fw), linear(E, Fw), linear(Fw, E)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Gqa(nn.Module):
    """MQA (kv_heads 1), GQA (model.kv_heads) and MHA (kv_heads = H): H query heads of d, kv_heads
    key/value heads of d, query head h on KV head h // (H / kv_heads)."""

    def __init__(self, c, kv_heads):
        super().__init__()
        E, H = c["dim"], c["heads"]
        self.d, self.eps, self.theta = E // H, c["norm_eps"], c["rope_theta"]
        self.wq, self.wo = linear(E, H * self.d), linear(H * self.d, E)
        self.wk, self.wv = linear(E, kv_heads * self.d), linear(E, kv_heads * self.d)
        self.q_norm, self.k_norm = RMSNorm(self.d, self.eps), RMSNorm(self.d, self.eps)
        self.out_norm = RMSNorm(H * self.d, self.eps)

    def forward(self, x):
        B, S, _ = x.shape
        q = rope(self.q_norm(self.wq(x).view(B, S, -1, self.d)), self.theta)
        k = rope(self.k_norm(self.wk(x).view(B, S, -1, self.d)), self.theta)
        v = self.wv(x).view(B, S, -1, self.d)
        o = causal_attention(q, k, v, 1.0 / math.sqrt(self.d)).reshape(B, S, -1)
        return self.wo(head_rms_norm(o, self.out_norm.weight, self.d, self.eps))


class CausalConv(nn.Module):
    """Causal conv over the sequence, `channels` outputs in groups of `group_size` inputs; identity init."""

    def __init__(self, channels, group_size, kernel):
        super().__init__()
        self.groups = channels // group_size
        w = torch.zeros(channels, group_size, kernel)
        w[torch.arange(channels), torch.arange(channels) % group_size, kernel - 1] = 1.0
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):  # [B, S, C]
        padded = F.pad(x.transpose(1, 2), (self.weight.shape[2] - 1, 0))
        return F.conv1d(padded, self.weight.to(x.dtype), self.bias.to(x.dtype), groups=self.groups).transpose(1, 2)


class Ccqa(nn.Module):
    def __init__(self, c):
        super().__init__()
        cc = c["ccqa"]
        E, H, Hkv, C = c["dim"], c["heads"], c["kv_heads"], cc["compression"]
        self.cfg, self.eps, self.theta = cc, c["norm_eps"], c["rope_theta"]
        # The layout (docs/MODEL.md, "Layout"): head_dim keeps H and H_kv heads of d / C; heads
        # keeps the head size d for H / C query heads and ceil(H_kv / C) key/value heads.
        if cc["compress"] == "heads":
            Hc, Hkc, self.dh = H // C, -(-Hkv // C), E // H
        else:
            Hc, Hkc, self.dh = H, Hkv, E // H // C
        Lq, Lk, K = Hc * self.dh, Hkc * self.dh, cc["conv_kernel"]
        self.wq, self.wk, self.wv, self.wo = linear(E, Lq), linear(E, Lk), linear(E, Lk), linear(Lq, E)
        if cc["use_convs"]:
            self.conv1_q, self.conv1_k = CausalConv(Lq, 1, K), CausalConv(Lk, 1, K)
            self.conv2_q, self.conv2_k = CausalConv(Lq, self.dh, K), CausalConv(Lk, self.dh, K)
        if cc["post_mix_norm"]:
            self.q_norm, self.k_norm = RMSNorm(self.dh, self.eps), RMSNorm(self.dh, self.eps)
        self.tau = nn.Parameter(torch.zeros(Hkc))
        self.out_norm = RMSNorm(Lq, self.eps)

    def mix(self, q0, k0, q, k):
        """Per token (steps 5-6): the qk-mean of the projections q0, k0 [B, S, L] added to the
        convolved q, k [B, S, L] as heads of dh, then the post-mix norms."""
        B, S, _ = q.shape
        dh, cc = self.dh, self.cfg
        q, k = q.view(B, S, -1, dh), k.view(B, S, -1, dh)
        if cc["qk_mean"]:
            group = q.shape[2] // k.shape[2]
            m = 0.5 * (q0.view(B, S, -1, dh) + k0.view(B, S, -1, dh).repeat_interleave(group, dim=2))
            q = q + cc["qk_mean_gain"] * m
            k = k + cc["qk_mean_gain"] * m.view(B, S, -1, group, dh).mean(3)
        if cc["post_mix_norm"]:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k

    def forward(self, x):
        B, S, _ = x.shape
        dh, cc = self.dh, self.cfg
        q0, k0 = self.wq(x), self.wk(x)
        v = self.wv(x).view(B, S, -1, dh)
        if cc["value_shift"]:  # per KV head, the second half of the channels from the previous token
            half = dh // 2
            v2 = F.pad(v[:, :-1, :, half:], (0, 0, 0, 0, 1, 0))
            v = torch.cat([v[..., :half], v2], -1)
        q, k = q0, k0
        if cc["use_convs"]:
            q, k = self.conv2_q(self.conv1_q(q0)), self.conv2_k(self.conv1_k(k0))
        q, k = self.mix(q0, k0, q, k)
        q = rope(q, self.theta)
        k = rope(k * self.tau.exp().to(k.dtype).view(1, 1, -1, 1), self.theta)
        o = causal_attention(q, k, v, 1.0 / math.sqrt(dh)).reshape(B, S, -1)
        return self.wo(head_rms_norm(o, self.out_norm.weight, dh, self.eps))


class Mla(nn.Module):
    def __init__(self, c):
        super().__init__()
        E, H = c["dim"], c["heads"]
        self.d, self.eps, self.theta = E // H, c["norm_eps"], c["rope_theta"]
        self.dr, dc = self.d // 2, round(c["mla"]["latent_ratio"] * E)
        d, dr = self.d, self.dr
        self.w_dq, self.w_uq, self.w_qr = linear(E, dc), linear(dc, H * d), linear(dc, H * dr)
        self.w_dkv, self.w_uk, self.w_uv = linear(E, dc), linear(dc, H * d), linear(dc, H * d)
        self.w_kr, self.wo = linear(E, dr), linear(H * d, E)
        self.q_norm, self.kv_norm = RMSNorm(dc, self.eps), RMSNorm(dc, self.eps)
        self.out_norm = RMSNorm(H * d, self.eps)

    def forward(self, x):
        B, S, _ = x.shape
        d, dr = self.d, self.dr
        c_q = self.q_norm(self.w_dq(x))
        q = torch.cat([self.w_uq(c_q).view(B, S, -1, d), rope(self.w_qr(c_q).view(B, S, -1, dr), self.theta)], -1)
        c_kv = self.kv_norm(self.w_dkv(x))
        k_c = self.w_uk(c_kv).view(B, S, -1, d)
        k_r = rope(self.w_kr(x).view(B, S, 1, dr), self.theta).expand(B, S, k_c.shape[2], dr)
        v = self.w_uv(c_kv).view(B, S, -1, d)
        o = causal_attention(q, torch.cat([k_c, k_r], -1), v, 1.0 / math.sqrt(d + dr)).reshape(B, S, -1)
        return self.wo(head_rms_norm(o, self.out_norm.weight, d, self.eps))


ATTENTION = {"mqa": lambda c: Gqa(c, 1), "gqa": lambda c: Gqa(c, c["kv_heads"]), "mha": lambda c: Gqa(c, c["heads"]),
             "ccqa": Ccqa, "mla": Mla}
SCALE_SECTION = {"mha": "gqa"}  # the config section holding a type's residual scale


class Layer(nn.Module):
    def __init__(self, c, kind):
        super().__init__()
        E = c["dim"]
        self.alpha = c[SCALE_SECTION.get(kind, kind)]["residual_scale"]
        self.attn_norm, self.mlp_norm = RMSNorm(E, c["norm_eps"]), RMSNorm(E, c["norm_eps"])
        self.attn = ATTENTION[kind](c)
        self.mlp = Mlp(E, round_up(round(c["mlp_ratio"] * E), 64))

    def forward(self, x):
        h = x + self.alpha * self.attn(self.attn_norm(x))
        return h + self.mlp(self.mlp_norm(h))


class MacroBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        # Named "layers.<l>" as in hydra (a ModuleDict keeps the numeric keys of its checkpoints).
        self.layers = nn.ModuleList([Layer(c, kind) for kind in c["pattern"]])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class HydraDense(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        E = c["dim"]
        self.vocab_padded = round_up(c["vocab_size"], 128)
        self.embed = nn.Embedding(self.vocab_padded, E)
        self.blocks = nn.ModuleList([MacroBlock(c) for _ in range(c["macro_blocks"])])
        self.final_norm = RMSNorm(E, c["norm_eps"])
        self.head = None if c["tie_embeddings"] else linear(E, self.vocab_padded)
        pad = torch.zeros(self.vocab_padded)
        pad[c["vocab_size"]:] = float("-inf")  # padded entries never get probability
        self.register_buffer("vocab_pad", pad, persistent=False)
        self.init_weights()

    def init_weights(self):
        """docs/MODEL.md "Initialisation": N(0, std) for matrices and embeddings, W_o and W_down
        std / sqrt(2 L); norms 1, convolutions identity, temperatures 0 (set by the modules)."""
        c = self.c
        std = c["init_std"]
        out_std = std / math.sqrt(2 * len(c["pattern"]) * c["macro_blocks"])
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith((".wo.weight", ".w_down.weight")):
                    p.normal_(0, out_std)
                elif name == "embed.weight" or name == "head.weight" or (
                        p.dim() == 2 and "norm" not in name):
                    p.normal_(0, std)

    def logits(self, h):
        """The LM head on the last hidden states h [B, S, E]: float32 (float64 in float64), the
        padded vocabulary entries -inf."""
        h = self.final_norm(h)
        logits = F.linear(h, self.head.weight if self.head is not None else self.embed.weight)
        logits = logits.float() if logits.dtype != torch.float64 else logits
        return logits + self.vocab_pad.to(logits.dtype)

    def forward(self, tokens, targets):
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return F.cross_entropy(self.logits(h).view(-1, self.vocab_padded), targets.reshape(-1))


def load_hydra_h5(model, path):
    """Loads a consolidated hydra checkpoint (`hydra ckpt consolidate`: /model/<name> per
    parameter, whole; the embedding and head with vocab_size rows) into the model. Returns the
    parameter names the file does not hold."""
    import h5py

    missing = []
    with h5py.File(path, "r") as f:
        stored = f["model"]
        for name, p in model.named_parameters():
            if name not in stored:
                missing.append(name)
                continue
            value = torch.from_numpy(stored[name][...].astype("float64")).to(p.dtype)
            with torch.no_grad():
                p.zero_()  # padded vocabulary rows are not stored
                p[: value.shape[0]].copy_(value.reshape(value.shape[0], *p.shape[1:]))
    return missing


def decay_groups(model, weight_decay):
    """hydra's rule (parallel/flat_layout.cpp): decay on tensors of 2+ dims except routers."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "router" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "router" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------
# The timed training step.
TRACED_STEPS = 3


def in_mode(module, mode):
    """module as a benchmark mode runs it: "eager" (itself), "compile" or "reduce-overhead"."""
    if mode == "compile":
        return torch.compile(module)
    if mode == "reduce-overhead":
        return torch.compile(module, mode="reduce-overhead")
    return module


def time_mode(c, mode, batch, seq_len, steps, warmup, flops_per_token, trace=None):
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = HydraDense(c).to(device)
    opt = torch.optim.AdamW(decay_groups(model, 0.1), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    forward = in_mode(model, mode)
    gen = torch.Generator(device="cpu").manual_seed(1)
    extra = TRACED_STEPS if trace else 0
    data = torch.randint(0, c["vocab_size"], (steps + warmup + extra, batch, seq_len + 1), generator=gen).to(device)

    def step(i):
        tokens = data[i]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = forward(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(warmup):  # compilation and autotuning happen here
        step(i).item()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    times = []
    losses = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        losses.append(step(i).item())  # .item() syncs, as a trainer that logs every step does
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    row = {"mode": mode, "batch": batch, "seq_len": seq_len, "steps": steps, "warmup_s": round(warmup_s, 2),
           "step_ms": round(step_s * 1e3, 3), "tok_s": round(batch * seq_len / step_s, 1),
           "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3),
           "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 3), "last_loss": losses[-1]}
    if flops_per_token:
        row["mfu"] = round(row["tok_s"] * flops_per_token / H200_PEAK_BF16, 4)
    if trace:  # after the timing, so that the profiler's overhead is not in it
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(warmup + steps, warmup + steps + TRACED_STEPS):
                step(i).item()
            torch.cuda.synchronize()
        prof.export_chrome_trace(trace)
        row["trace"] = trace
        row["traced_steps"] = TRACED_STEPS
    del model, opt, forward
    torch.cuda.empty_cache()
    return row


def run_rows(batches, modes, time_one, config, json_path):
    """time_one(mode, batch) for every batch and mode, each row printed as it comes (a mode that
    runs out of memory is a row with its error) and tagged with the config; all rows written to
    json_path (a temporary, then renamed) when given."""
    import os

    rows = []
    for batch in batches:
        for mode in modes:
            try:
                row = time_one(mode, batch)
            except torch.cuda.OutOfMemoryError as e:
                row = {"mode": mode, "batch": batch, "error": "out of memory: " + str(e)[:200]}
                torch.cuda.empty_cache()
            row["config"] = config
            print(json.dumps(row), flush=True)
            rows.append(row)
    if json_path:
        with open(json_path + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(json_path + ".tmp", json_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], help="model key=value (as --set model.key=value)")
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--modes", default="eager,compile,reduce-overhead")
    ap.add_argument("--flops-per-token", type=float, default=0.0, help="from hydra info --json, for MFU")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--trace-dir", help="also profile %d steps of each mode into DIR/torch-MODE-bBATCH.json "
                    "(Chrome traces; bench/trace_summary.py reads them)" % TRACED_STEPS)
    args = ap.parse_args()
    c = model_config(args.config, args.set)

    def time_one(mode, batch):
        trace = f"{args.trace_dir}/torch-{mode}-b{batch}.json" if args.trace_dir else None
        return time_mode(c, mode, batch, args.seq_len, args.steps, args.warmup, args.flops_per_token, trace)

    run_rows(args.batch, args.modes.split(","), time_one, args.config, args.json)


if __name__ == "__main__":
    main()
