# An independent float64 NumPy implementation of the HYDRA model, written from docs/MODEL.md
# alone (no look at model/): if the page leaves out or misstates a step, this file's loss
# differs from hydra's. Used by tests/model/check_spec_reference.py, which trains a small
# model with MoD and MoR and compares the losses; also usable by hand:
#   spec_reference.py RUN.yaml CHECKPOINT_DIR train|val [WINDOWS]
import glob, json, math, sys
import numpy as np, h5py, yaml


def sigmoid(z): return 1.0 / (1.0 + np.exp(-z))
def bce_logits(r, m): return np.maximum(r, 0) - r * m + np.log1p(np.exp(-np.abs(r)))


class Model:
    def __init__(self, cfg, params):
        m = cfg['model']; self.m = m; self.P = params
        self.E = m['dim']; self.H = m['heads']; self.d = self.E // self.H; self.Hkv = m['kv_heads']
        cc = m['ccqa']; self.C = cc['compression']
        if cc.get('compress', 'heads') == 'heads':  # H/C query heads, ceil(H_kv/C) KV heads, of size d
            self.Hc = self.H // self.C; self.Hkc = -(-self.Hkv // self.C); self.dh = self.d
        else:  # every head, of size d/C
            self.Hc = self.H; self.Hkc = self.Hkv; self.dh = self.d // self.C
        self.gamma = cc['qk_mean_gain'] if cc['qk_mean'] else 0.0
        self.use_convs = cc['use_convs']; self.value_shift = cc['value_shift']
        self.post_mix_norm = cc.get('post_mix_norm', True)
        self.eps = m.get('norm_eps', 1e-6); self.theta = m.get('rope_theta', 10000.0)
        gqa_scale = m.get('gqa', {}).get('residual_scale', 1.0)
        self.alpha = {'mqa': m.get('mqa', {}).get('residual_scale', 1.0), 'gqa': gqa_scale, 'mha': gqa_scale,
                      'ccqa': cc.get('residual_scale', 0.5), 'mla': m['mla'].get('residual_scale', 0.5)}
        self.pattern = m['pattern']; self.nb = m['macro_blocks']; self.R = m['mor']['recursions']
        self.mod = m['mod']; self.V = m['vocab_size']; self.tied = m['tie_embeddings']
        self.N_mod = len(self.mod['layers']) * self.nb * self.R if self.mod['enabled'] else 0
        self.N_mor = (self.R - 1) * self.nb

    def p(self, name): return self.P[name]

    def rms(self, x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def head_norm(self, o, w, hs):
        B, n, _ = o.shape
        return self.rms(o.reshape(B, n, -1, hs), w.reshape(-1, hs)).reshape(B, n, -1)

    def rope(self, x, pos):
        D = x.shape[-1]; half = D // 2
        inv = self.theta ** (-2.0 * np.arange(half) / D)
        a = pos[:, :, None, None].astype(np.float64) * inv
        c, s = np.cos(a), np.sin(a)
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    @staticmethod
    def attend(q, k, v, scale):
        G = q.shape[2] // k.shape[2]
        kk = np.repeat(k, G, axis=2); vv = np.repeat(v, G, axis=2)  # head h -> KV head h // G
        s = np.einsum('bihd,bjhd->bhij', q, kk) * scale
        n = q.shape[1]
        s = np.where(np.triu(np.ones((n, n), bool), 1), -np.inf, s)
        s = s - s.max(-1, keepdims=True); e = np.exp(s); pr = e / e.sum(-1, keepdims=True)
        return np.einsum('bhij,bjhd->bihd', pr, vv)

    @staticmethod
    def conv(x, W, b):
        C, g, K = W.shape; B, n, _ = x.shape
        xp = np.concatenate([np.zeros((B, K - 1, C)), x], 1)
        out = np.broadcast_to(b, (B, n, C)).copy()
        base = (np.arange(C) // g) * g
        for mtap in range(K):
            xs = xp[:, mtap:mtap + n, :]
            for i in range(g):
                out += W[:, i, mtap] * xs[:, :, base + i]
        return out

    def mqa(self, pre, x, pos): return self.grouped(pre, x, pos, 1)
    def gqa(self, pre, x, pos): return self.grouped(pre, x, pos, self.Hkv)
    def mha(self, pre, x, pos): return self.grouped(pre, x, pos, self.H)

    def grouped(self, pre, x, pos, Hkv):  # MQA, GQA, MHA: H query heads, Hkv key/value heads of d
        B, n, _ = x.shape; d = self.d
        q = (x @ self.p(pre + 'wq.weight').T).reshape(B, n, self.H, d)
        k = (x @ self.p(pre + 'wk.weight').T).reshape(B, n, Hkv, d)
        v = (x @ self.p(pre + 'wv.weight').T).reshape(B, n, Hkv, d)
        q = self.rope(self.rms(q, self.p(pre + 'q_norm.weight')), pos)
        k = self.rope(self.rms(k, self.p(pre + 'k_norm.weight')), pos)
        o = self.attend(q, k, v, 1 / math.sqrt(d)).reshape(B, n, -1)
        return self.head_norm(o, self.p(pre + 'out_norm.weight'), d) @ self.p(pre + 'wo.weight').T

    def ccqa(self, pre, x, pos):
        B, n, _ = x.shape; dh = self.dh; H = self.Hc; Hkv = self.Hkc; G = H // Hkv
        q0 = x @ self.p(pre + 'wq.weight').T
        k0 = x @ self.p(pre + 'wk.weight').T
        u = (x @ self.p(pre + 'wv.weight').T).reshape(B, n, Hkv, dh)
        v = u.copy()
        if self.value_shift:
            half = dh // 2
            v[:, :, :, half:] = 0
            v[:, 1:, :, half:] = u[:, :-1, :, half:]
        # packed [q0 ; k0], conv1 depthwise then conv2 grouped per head
        u0 = np.concatenate([q0, k0], -1)
        if self.use_convs:
            W1 = np.concatenate([self.p(pre + 'conv1_q.weight'), self.p(pre + 'conv1_k.weight')], 0)
            b1 = np.concatenate([self.p(pre + 'conv1_q.bias'), self.p(pre + 'conv1_k.bias')], 0)
            W2 = np.concatenate([self.p(pre + 'conv2_q.weight'), self.p(pre + 'conv2_k.weight')], 0)
            b2 = np.concatenate([self.p(pre + 'conv2_q.bias'), self.p(pre + 'conv2_k.bias')], 0)
            u1 = self.conv(self.conv(u0, W1, b1), W2, b2)
        else:
            u1 = u0
        Lq = H * dh
        qc = u1[..., :Lq].reshape(B, n, H, dh); kc = u1[..., Lq:].reshape(B, n, Hkv, dh)
        q0h = q0.reshape(B, n, H, dh); k0h = k0.reshape(B, n, Hkv, dh)
        mh = 0.5 * (q0h + k0h[:, :, np.arange(H) // G])
        q = qc + self.gamma * mh
        k = kc + self.gamma * mh.reshape(B, n, Hkv, G, dh).mean(3)
        if self.post_mix_norm:
            q = self.rms(q, self.p(pre + 'q_norm.weight'))
            k = self.rms(k, self.p(pre + 'k_norm.weight'))
        k = k * np.exp(self.p(pre + 'tau'))[:, None]
        q = self.rope(q, pos); k = self.rope(k, pos)
        o = self.attend(q, k, v, 1 / math.sqrt(dh)).reshape(B, n, -1)
        return self.head_norm(o, self.p(pre + 'out_norm.weight'), dh) @ self.p(pre + 'wo.weight').T

    def mla(self, pre, x, pos):
        B, n, _ = x.shape; d = self.d; dr = d // 2; H = self.H
        cq = self.rms(x @ self.p(pre + 'w_dq.weight').T, self.p(pre + 'q_norm.weight'))
        qc = (cq @ self.p(pre + 'w_uq.weight').T).reshape(B, n, H, d)
        qr = self.rope((cq @ self.p(pre + 'w_qr.weight').T).reshape(B, n, H, dr), pos)
        ckv = self.rms(x @ self.p(pre + 'w_dkv.weight').T, self.p(pre + 'kv_norm.weight'))
        kc = (ckv @ self.p(pre + 'w_uk.weight').T).reshape(B, n, H, d)
        v = (ckv @ self.p(pre + 'w_uv.weight').T).reshape(B, n, H, d)
        kr = self.rope((x @ self.p(pre + 'w_kr.weight').T).reshape(B, n, 1, dr), pos)
        q = np.concatenate([qc, qr], -1); k = np.concatenate([kc, np.broadcast_to(kr, (B, n, H, dr))], -1)
        o = self.attend(q, k, v, 1 / math.sqrt(d + dr)).reshape(B, n, -1)
        return self.head_norm(o, self.p(pre + 'out_norm.weight'), d) @ self.p(pre + 'wo.weight').T

    def dense(self, pre, typ, x, pos):
        a = getattr(self, typ)(pre + 'attn.', self.rms(x, self.p(pre + 'attn_norm.weight')), pos)
        h = x + self.alpha[typ] * a
        z = self.rms(h, self.p(pre + 'mlp_norm.weight'))
        mlp = ((z @ self.p(pre + 'mlp.w_gate.weight').T) * sigmoid(z @ self.p(pre + 'mlp.w_gate.weight').T)
               * (z @ self.p(pre + 'mlp.w_up.weight').T)) @ self.p(pre + 'mlp.w_down.weight').T
        return h + mlp

    # Routing: returns (new x, aux of this application (unweighted), selected mask)
    def routed(self, x, pos, r, eligible, k, f, mode):
        B, n, E = x.shape
        out = x.copy()
        if mode == 'topk':
            sc = np.where(eligible, r, -np.inf)
            idx = np.sort(np.argsort(-sc, axis=1, kind='stable')[:, :k], axis=1)
            xs = np.take_along_axis(x, idx[..., None], 1); ps = np.take_along_axis(pos, idx, 1)
            y = f(xs, ps)
            g = sigmoid(np.take_along_axis(r, idx, 1))[..., None]
            member = np.zeros((B, n))
            for b in range(B):
                out[b, idx[b]] = xs[b] + g[b] * (y[b] - xs[b]); member[b, idx[b]] = 1
            aux = (bce_logits(r, member) * eligible).sum() / max(1, eligible.sum())
            return out, aux, member > 0.5
        chosen = eligible & (r > 0)
        for b in range(B):
            idx = np.nonzero(chosen[b])[0]
            if len(idx) == 0: continue
            xs = x[b:b + 1, idx]; y = f(xs, pos[b:b + 1, idx])
            g = sigmoid(r[b, idx])[None, :, None]
            out[b, idx] = (xs + g * (y - xs))[0]
        return out, 0.0, chosen

    def layer(self, b, l, x, pos, mode):
        pre = f'blocks.{b}.layers.{l}.'; typ = self.pattern[l]
        if not (self.mod['enabled'] and l in self.mod['layers']):
            return self.dense(pre, typ, x, pos), 0.0
        n = x.shape[1]
        r = (x @ self.p(pre + 'router.weight').T)[..., 0] + self.p(pre + 'router.bias')[0]
        k = max(1, min(n, math.floor(self.mod['capacity'] * n + 1e-9)))
        out, aux, _ = self.routed(x, pos, r, np.ones(r.shape, bool), k,
                                  lambda xs, ps: self.dense(pre, typ, xs, ps), mode)
        return out, self.mod['aux_weight'] / self.N_mod * aux

    def block(self, b, x, pos, mode):
        auxes = []
        def run_pass(h, ps):
            for l in range(len(self.pattern)):
                h, a = self.layer(b, l, h, ps, mode); auxes.append(a)
            return h
        h = run_pass(x, pos)
        B, S, _ = x.shape
        eligible = np.ones((B, S), bool); aux = 0.0
        for r in range(2, self.R + 1):
            pre = f'blocks.{b}.mor_routers.{r - 2}.'
            g = (h @ self.p(pre + 'weight').T)[..., 0] + self.p(pre + 'bias')[0]
            k = -(-S * (self.R - r + 1) // self.R)
            h, a, eligible = self.routed(h, pos, g, eligible, k, run_pass, mode)
            aux += self.m['mor']['aux_weight'] / self.N_mor * a
        return h, aux + sum(auxes)

    def forward(self, tokens, targets, mode):
        B, S = tokens.shape
        h = self.p('embed.weight')[tokens]
        pos = np.broadcast_to(np.arange(S), (B, S))
        aux = 0.0
        for b in range(self.nb):
            h, a = self.block(b, h, pos, mode); aux += a
        h = self.rms(h, self.p('final_norm.weight'))
        W = self.p('embed.weight') if self.tied else self.p('head.weight')
        logits = h @ W.T
        logits[..., self.V:] = -np.inf
        mx = logits.max(-1, keepdims=True)
        logp = logits - mx - np.log(np.exp(logits - mx).sum(-1, keepdims=True))
        lm = -np.take_along_axis(logp, targets[..., None], -1).mean()
        return lm, aux


def load_params(ckpt):
    """Every parameter of a one-process checkpoint (rank_0.h5, /model/<name>), as float64."""
    params = {}
    with h5py.File(glob.glob(ckpt + '/rank_*.h5')[0]) as f:
        f['model'].visititems(lambda n, o: params.__setitem__(n, o[...].astype(np.float64))
                              if isinstance(o, h5py.Dataset) else None)
    return params


def windows(data_path, split, seq_len, count):
    """The first `count` windows of seq_len + 1 tokens (stride seq_len) of a split's first shard."""
    man = json.load(open(data_path + '/manifest.json'))
    toks = np.fromfile(data_path + '/' + man[split][0]['file'], dtype='<u2', offset=64).astype(np.int64)
    count = count or (len(toks) - 1) // seq_len
    return np.stack([toks[w * seq_len:w * seq_len + seq_len + 1] for w in range(count)])


def main():
    cfg = yaml.safe_load(open(sys.argv[1])); ckpt = sys.argv[2]; split = sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    model = Model(cfg, load_params(ckpt))
    T = cfg['train']['seq_len']
    win = windows(cfg['data']['path'], split, T, count)
    mode = 'topk' if split == 'train' else 'threshold'
    lm, aux = model.forward(win[:, :T], win[:, 1:], mode)
    print(json.dumps({'split': split, 'windows': len(win), 'lm_loss': lm, 'aux_loss': float(aux)}))


if __name__ == '__main__':
    main()
