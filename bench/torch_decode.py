#!/usr/bin/env python3
"""The baseline for `hydra generate`'s speed: cached decoding of the same dense HYDRA model in
plain PyTorch, as a user would write it after gpt-fast: a static KV cache per layer (batch x
the whole context, preallocated, written in place at each token's position), attention over the
whole cache with a mask of the positions written so far, so that every decode step has the same
shapes and torch.compile (mode "reduce-overhead": CUDA graphs) can capture it.

The model is bench/torch_baseline.py's (parameter names and shapes are hydra's, so a
consolidated hydra checkpoint loads); this file adds what decoding needs per attention type
(docs/MODEL.md, "Decoding with caches"): MQA/GQA/MHA cache k (after QK-norm and RoPE) and v;
CCQA caches its keys after the whole prologue and its shifted values, plus the last K-1 inputs
of each convolution and the last token's value projection (the next token's shift); MLA caches
each head's key and value (the plain form, not the latent with absorbed up-projections that
hydra keeps: what a user writes first). Dense only (MoD off, one recursion).

  python3 bench/torch_decode.py --config configs/small.yaml --set mod.enabled=false --set mor.recursions=1 \\
      --batch 1 64 --prompt-len 128 --new 128 --modes eager,compile,reduce-overhead --json out.json

Each (batch, mode) prints one JSON row: prefill_tok_s (the prompt of every sequence in one eager
chunk), decode_tok_s (batch x new tokens over the decode steps' time, synchronised at both
ends, after warm-up steps), decode_ms_per_step, kv_cache_bytes (the static caches), peak_gb.
`--check` instead compares, in float64 on the CPU, the logits of cached decoding token by token
with the full forward's at every position (tests/model/check_torch_decode.py runs it).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_baseline as tb  # noqa: E402


def rope_at(x, positions, theta):
    """Rotate-half RoPE over the last dim of x [B, n, heads, D] at positions [n] (a long tensor)."""
    D = x.shape[-1]
    half = D // 2
    angle_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, half, dtype=angle_dtype, device=x.device) * (2.0 / D))
    angles = positions.to(angle_dtype)[:, None] * inv_freq  # [n, D/2]
    cos = angles.cos().to(x.dtype)[None, :, None, :]
    sin = angles.sin().to(x.dtype)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def cached_attention(q, k, v, positions, scale):
    """q [B, n, H, D] at positions [n]; k [B, T, Hkv, D], v [B, T, Hkv, Dv] the whole static
    cache; query i sees cache entries 0..positions[i]. Query head h uses KV head h // (H / Hkv)."""
    group = q.shape[2] // k.shape[2]
    if group > 1:
        k = k.repeat_interleave(group, dim=2)
        v = v.repeat_interleave(group, dim=2)
    visible = torch.arange(k.shape[1], device=q.device)[None, :] <= positions[:, None]  # [n, T]
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if hasattr(F, "scaled_dot_product_attention") and q.is_cuda:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale)
    else:
        scores = (q @ k.transpose(-1, -2)) * scale
        if scores.dtype != torch.float64:
            scores = scores.float()
        out = scores.masked_fill(~visible, float("-inf")).softmax(-1).to(q.dtype) @ v
    return out.transpose(1, 2)


def conv_chunk(conv, x, history):
    """A causal convolution on the n new inputs x [B, n, C], `history` [B, K-1, C] holding the
    K-1 before them (zeros before the first token: the convolution's left padding); the history
    is updated in place."""
    full = torch.cat([history, x], 1)
    out = F.conv1d(full.transpose(1, 2), conv.weight.to(x.dtype), conv.bias.to(x.dtype), groups=conv.groups)
    history.copy_(full[:, full.shape[1] - history.shape[1]:])
    return out.transpose(1, 2)


# --------------------------------------------------------------------------------------------
# One chunk of n new tokens x [B, n, E] at positions [n] through each attention type, against
# and into its cache (a dict of preallocated tensors).
def gqa_chunk(m, x, positions, cache):
    B, n, _ = x.shape
    q = rope_at(m.q_norm(m.wq(x).view(B, n, -1, m.d)), positions, m.theta)
    k = rope_at(m.k_norm(m.wk(x).view(B, n, -1, m.d)), positions, m.theta)
    cache["k"].index_copy_(1, positions, k)
    cache["v"].index_copy_(1, positions, m.wv(x).view(B, n, -1, m.d))
    o = cached_attention(q, cache["k"], cache["v"], positions, 1.0 / math.sqrt(m.d)).reshape(B, n, -1)
    return m.wo(tb.head_rms_norm(o, m.out_norm.weight, m.d, m.eps))


def ccqa_chunk(m, x, positions, cache):
    B, n, _ = x.shape
    dh, cc = m.dh, m.cfg
    q0, k0 = m.wq(x), m.wk(x)
    v = m.wv(x).view(B, n, -1, dh)
    if cc["value_shift"]:  # the second half of each KV head's channels from the token before
        half = dh // 2
        before = torch.cat([cache["v_last"], v[:, :-1]], 1)
        cache["v_last"].copy_(v[:, -1:])
        v = torch.cat([v[..., :half], before[..., half:]], -1)
    q, k = q0, k0
    if cc["use_convs"]:
        q = conv_chunk(m.conv2_q, conv_chunk(m.conv1_q, q0, cache["conv1_q"]), cache["conv2_q"])
        k = conv_chunk(m.conv2_k, conv_chunk(m.conv1_k, k0, cache["conv1_k"]), cache["conv2_k"])
    q, k = m.mix(q0, k0, q, k)
    q = rope_at(q, positions, m.theta)
    k = rope_at(k * m.tau.exp().to(k.dtype).view(1, 1, -1, 1), positions, m.theta)
    cache["k"].index_copy_(1, positions, k)
    cache["v"].index_copy_(1, positions, v)
    o = cached_attention(q, cache["k"], cache["v"], positions, 1.0 / math.sqrt(dh)).reshape(B, n, -1)
    return m.wo(tb.head_rms_norm(o, m.out_norm.weight, dh, m.eps))


def mla_chunk(m, x, positions, cache):
    B, n, _ = x.shape
    d, dr = m.d, m.dr
    c_q = m.q_norm(m.w_dq(x))
    q = torch.cat([m.w_uq(c_q).view(B, n, -1, d), rope_at(m.w_qr(c_q).view(B, n, -1, dr), positions, m.theta)], -1)
    c_kv = m.kv_norm(m.w_dkv(x))
    k_c = m.w_uk(c_kv).view(B, n, -1, d)
    k_r = rope_at(m.w_kr(x).view(B, n, 1, dr), positions, m.theta).expand(B, n, k_c.shape[2], dr)
    cache["k"].index_copy_(1, positions, torch.cat([k_c, k_r], -1))
    cache["v"].index_copy_(1, positions, m.w_uv(c_kv).view(B, n, -1, d))
    o = cached_attention(q, cache["k"], cache["v"], positions, 1.0 / math.sqrt(d + dr)).reshape(B, n, -1)
    return m.wo(tb.head_rms_norm(o, m.out_norm.weight, d, m.eps))


CHUNK = {tb.Gqa: gqa_chunk, tb.Ccqa: ccqa_chunk, tb.Mla: mla_chunk}


def empty_cache(m, batch, context, dtype, device):
    """The static cache of attention module m: zeros, batch x context entries."""
    z = lambda *shape: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
    if isinstance(m, tb.Gqa):
        kv = m.wk.out_features // m.d
        return {"k": z(batch, context, kv, m.d), "v": z(batch, context, kv, m.d)}
    if isinstance(m, tb.Ccqa):
        Lq, Lk, K, dh = m.wq.out_features, m.wk.out_features, m.cfg["conv_kernel"], m.dh
        cache = {"k": z(batch, context, Lk // dh, dh), "v": z(batch, context, Lk // dh, dh),
                 "v_last": z(batch, 1, Lk // dh, dh)}
        if m.cfg["use_convs"]:
            cache.update({"conv1_q": z(batch, K - 1, Lq), "conv2_q": z(batch, K - 1, Lq),
                          "conv1_k": z(batch, K - 1, Lk), "conv2_k": z(batch, K - 1, Lk)})
        return cache
    heads = m.wo.in_features // m.d
    return {"k": z(batch, context, heads, m.d + m.dr), "v": z(batch, context, heads, m.d)}


class CachedDecoder(torch.nn.Module):
    """The model with static caches for `batch` sequences of up to `context` tokens (buffers, so
    that torch.compile sees them as the module's state)."""

    def __init__(self, model, batch, context, dtype, device):
        super().__init__()
        self.model = model
        self.caches = []
        for b, block in enumerate(model.blocks):
            for l, layer in enumerate(block.layers):
                cache = empty_cache(layer.attn, batch, context, dtype, device)
                for key, t in cache.items():
                    self.register_buffer(f"cache_{b}_{l}_{key}", t, persistent=False)
                self.caches.append({key: getattr(self, f"cache_{b}_{l}_{key}") for key in cache})

    def cache_bytes(self):
        return sum(t.numel() * t.element_size() for cache in self.caches for t in cache.values())

    def forward(self, tokens, positions):
        """tokens [B, n] at positions [n] (the same for every sequence): the logits that follow
        each [B, n, V_padded], the caches written at those positions."""
        model = self.model
        h = model.embed(tokens)
        i = 0
        for block in model.blocks:
            for layer in block.layers:
                h = h + layer.alpha * CHUNK[type(layer.attn)](layer.attn, layer.attn_norm(h), positions, self.caches[i])
                h = h + layer.mlp(layer.mlp_norm(h))
                i += 1
        return model.logits(h)


def full_logits(model, tokens):
    """The forward's logits [B, S, V_padded] (torch_baseline's forward without the loss)."""
    h = model.embed(tokens)
    for block in model.blocks:
        h = block(h)
    return model.logits(h)


def check(c, args):
    """Float64 on the CPU: a prompt in one chunk, then one token at a time, against the forward."""
    torch.manual_seed(args.seed)
    model = tb.HydraDense(c).double()
    if args.checkpoint:
        missing = tb.load_hydra_h5(model, args.checkpoint)
        if missing:
            sys.exit(f"{args.checkpoint}: no {missing}")
    else:  # the init's identity convolutions, unit norms and zero temperatures would hide state bugs
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    batch, total = 2, args.prompt_len + args.new
    tokens = torch.randint(0, c["vocab_size"], (batch, total))
    with torch.no_grad():
        want = full_logits(model, tokens)
        decoder = CachedDecoder(model, batch, total, torch.float64, torch.device("cpu"))
        got = [decoder(tokens[:, :args.prompt_len], torch.arange(args.prompt_len))]
        for p in range(args.prompt_len, total):
            got.append(decoder(tokens[:, p:p + 1], torch.tensor([p])))
        got = torch.cat(got, 1)
    real = want[..., :c["vocab_size"]]
    err = (got[..., :c["vocab_size"]] - real).abs().max().item() / real.abs().max().item()
    print(json.dumps({"check": "cached decoding against the forward", "pattern": c["pattern"], "tokens": total,
                      "max_rel_error": err}), flush=True)
    if not err < 1e-10:
        sys.exit(f"FAIL: cached logits differ from the forward's by {err:.3g} of their largest")


def greedy(c, args):
    """Greedy continuation of --prompt-ids (the baseline's answer to `hydra generate --temperature 0`)."""
    model = tb.HydraDense(c).double()
    missing = tb.load_hydra_h5(model, args.checkpoint)
    if missing:
        sys.exit(f"{args.checkpoint}: no {missing}")
    prompt = [int(t) for t in args.prompt_ids.split(",")]
    decoder = CachedDecoder(model, 1, len(prompt) + args.new, torch.float64, torch.device("cpu"))
    out = []
    with torch.no_grad():
        logits = decoder(torch.tensor([prompt]), torch.arange(len(prompt)))[0, -1]
        for p in range(len(prompt), len(prompt) + args.new):
            out.append(int(logits.argmax()))
            if p + 1 < len(prompt) + args.new:
                logits = decoder(torch.tensor([[out[-1]]]), torch.tensor([p]))[0, -1]
    print(json.dumps({"tokens": out}), flush=True)


def time_mode(c, mode, batch, args):
    torch.manual_seed(args.seed)
    device = torch.device("cuda")
    dtype = torch.bfloat16
    model = tb.HydraDense(c).to(device, dtype).eval()
    if args.checkpoint:
        tb.load_hydra_h5(model, args.checkpoint)
    context = args.prompt_len + args.new
    decoder = CachedDecoder(model, batch, context, dtype, device)
    step = tb.in_mode(decoder, mode)
    gen = torch.Generator(device="cpu").manual_seed(1)
    prompt = torch.randint(0, c["vocab_size"], (batch, args.prompt_len), generator=gen).to(device)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = decoder(prompt, torch.arange(args.prompt_len, device=device))  # eager: one chunk
        token = logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        prefill_s = time.perf_counter() - t0
        # Warm-up steps (compilation, graph capture) at the first positions, then timed ones: the
        # positions go on from there, each step's token the last one's greedy choice.
        warmup = min(args.warmup, args.new - 1)
        timed = args.new - warmup
        pos = args.prompt_len
        position = torch.empty(1, dtype=torch.long, device=device)
        for _ in range(warmup):
            position.fill_(pos)
            token = step(token, position)[:, -1].argmax(-1, keepdim=True)
            pos += 1
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(timed):
            position.fill_(pos)
            token = step(token, position)[:, -1].argmax(-1, keepdim=True)
            pos += 1
        torch.cuda.synchronize()
        decode_s = time.perf_counter() - t0
    row = {"mode": mode, "batch": batch, "prompt_len": args.prompt_len, "new": args.new, "warmup_steps": warmup,
           "timed_steps": timed, "prefill_tok_s": round(batch * args.prompt_len / prefill_s, 1),
           "decode_tok_s": round(batch * timed / decode_s, 1), "decode_ms_per_step": round(decode_s / timed * 1e3, 3),
           "kv_cache_bytes": decoder.cache_bytes(), "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3)}
    del model, decoder, step
    torch.cuda.empty_cache()
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], help="model key=value (as --set model.key=value)")
    ap.add_argument("--checkpoint", help="a consolidated hydra checkpoint (hydra ckpt consolidate); default: the init")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=8, help="decode steps before the timed ones")
    ap.add_argument("--modes", default="eager,compile,reduce-overhead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--check", action="store_true", help="float64 on the CPU: cached logits against the forward's")
    ap.add_argument("--prompt-ids", help="with --checkpoint: print the greedy continuation of these ids (float64, CPU)")
    args = ap.parse_args()
    c = tb.model_config(args.config, args.set)
    if args.check:
        return check(c, args)
    if args.prompt_ids:
        return greedy(c, args)
    if not torch.cuda.is_available():
        sys.exit("the timing needs a CUDA device (--check and --prompt-ids run on the CPU)")
    tb.run_rows(args.batch, args.modes.split(","), lambda mode, batch: time_mode(c, mode, batch, args), args.config,
                args.json)


if __name__ == "__main__":
    main()
