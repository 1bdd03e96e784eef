# offline: real coder bits (mask/digits split) vs ideal adaptive code lengths under variant contexts
import sys, numpy as np
from livetok.engine.fsq_index import index_to_digits
from livetok.stream.wire import entropy as E
z = np.load(sys.argv[1]); LV = (8, 8, 8, 5, 5, 5); G = (24, 32)
names = sorted({k.rsplit('_', 1)[0] for k in z.files})
def digits_of(idx):
    return index_to_digits(idx, LV)
class Sim:
    """ideal code length of an adaptive count model with the wire's chunking and halving"""
    def __init__(s, nctx, a): s.c = np.ones((nctx, a), np.int64)
    def code(s, ctx, sym):
        bits = 0.0
        for a, b in E.chunk_bounds(len(ctx)):
            q = E._qfreq(s.c)
            f = q[ctx[a:b], sym[a:b]]
            bits += float(np.sum(16 - np.log2(np.maximum(f, 1))))
            s.c = E._update(s.c, ctx[a:b], sym[a:b])
        return bits
def run(variant):
    tot = {"mask": 0.0, "dig": 0.0}; nf = 0
    for nm in names:
        M, K, I = z[nm + "_mask"], z[nm + "_k"], z[nm + "_idx"]
        n = G[0] * G[1]; off = 0
        last = -np.ones((6, n), np.int64); age = np.zeros(n, np.int64); prev = None
        sims = variant["make"]()
        msim = Sim(3 * 5 * 8, 2)
        for t in range(len(K)):
            mask = M[t]; k = K[t]; pos = np.flatnonzero(mask); idx = I[off:off + k]; off += k
            if 0 < k < n:
                st = E.CoderState(levels=LV, grid=G, prev_mask=prev, last=last.astype(np.int16), mask_counts=None, digit_counts=())  if False else None
                kb = (8 * k) // (n + 1)
                if prev is None: ctx = np.full(n, kb)
                else:
                    pv = prev.reshape(G).astype(np.int64); p = np.pad(pv, 1)
                    nb = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
                    ctx = (((pv + 1) * 5 + nb) * 8 + kb).ravel()
                tot["mask"] += msim.code(ctx, mask.astype(np.int64))
            dg = digits_of(idx)
            for d in range(6):
                ctx = variant["ctx"](d, pos, dg, last, age, prev)
                tot["dig"] += sims[d].code(ctx, dg[d])
            for d in range(6): last[d, pos] = dg[d]
            age += 1; age[pos] = 0; prev = mask.copy(); nf += 1
    return {k: v / nf for k, v in tot.items()}
def base_make():
    return [Sim((lv + 1) * (LV[d - 1] if d else 1), lv) for d, lv in enumerate(LV)]
def base_ctx(d, pos, dg, last, age, prev):
    a = last[d, pos] + 1
    return a if d == 0 else a * LV[d - 1] + dg[d - 1]
def age_make():
    return [Sim(2 * (lv + 1) * (LV[d - 1] if d else 1), lv) for d, lv in enumerate(LV)]
def age_ctx(d, pos, dg, last, age, prev):
    return base_ctx(d, pos, dg, last, age, prev) * 2 + (age[pos] == 0)
def two_make():
    return [Sim((lv + 1) * (LV[d - 1] if d else 1) * (LV[d - 2] if d > 1 else 1), lv) for d, lv in enumerate(LV)]
def two_ctx(d, pos, dg, last, age, prev):
    c = base_ctx(d, pos, dg, last, age, prev)
    return c if d < 2 else c * LV[d - 2] + dg[d - 2]
def nb_make():
    return [Sim((lv + 1) * (LV[d - 1] if d else 1) * 3, lv) for d, lv in enumerate(LV)]
def nb_ctx(d, pos, dg, last, age, prev):
    # neighbours' last digit d vs this position's last: how many of left/up agree (0,1,2)
    h, w = G; l = last[d].reshape(h, w); p = np.pad(l, 1, constant_values=-2)
    same = (p[1:-1, :-2] == l).astype(int) + (p[:-2, 1:-1] == l).astype(int)
    return base_ctx(d, pos, dg, last, age, prev) * 3 + same.ravel()[pos]
V = {"base": dict(make=base_make, ctx=base_ctx), "age": dict(make=age_make, ctx=age_ctx),
     "two": dict(make=two_make, ctx=two_ctx), "nb": dict(make=nb_make, ctx=nb_ctx)}
for name in sys.argv[2:]:
    r = run(V[name]); print(name, {k: round(v, 1) for k, v in r.items()}, round(sum(r.values()), 1), flush=True)

# ---- initial tables learned from other clips (leave-one-out)
def raw_counts(nms, variant):
    global names
    keep = names; names = nms
    acc = None
    orig = Sim.code
    store = {}
    def code(s, ctx, sym):
        np.add.at(store.setdefault(id(s), (s, np.zeros_like(s.c)))[1], (ctx, sym), 1)
        return orig(s, ctx, sym)
    Sim.code = code
    run(variant)
    Sim.code = orig; names = keep
    return store
def init_run(strength, variant=None):
    global names
    variant = variant or V["base"]
    tot = {"mask": 0.0, "dig": 0.0}; nf = 0
    allnames = list(names)
    for nm in allnames:
        others = [o for o in allnames if o != nm]
        # accumulate by shape (mask table and 6 digit tables)
        st = raw_counts(others, variant)
        byshape = {}
        for s, c in st.values():
            byshape.setdefault(c.shape, []).append(c)
        def prior(shape, d=None):
            cs = byshape[shape]; c = sum(cs)
            t = c.sum(1, keepdims=True); sc = np.minimum(1.0, strength / np.maximum(t, 1))
            return 1 + np.floor(c * sc).astype(np.int64)
        mk = variant["make"]
        def make2():
            sims = mk()
            for s in sims: s.c = prior(s.c.shape)
            return sims
        orig_init = Sim.__init__
        def init(s, nctx, a):
            orig_init(s, nctx, a)
            if (nctx, a) == (120, 2): s.c = prior((120, 2))
        keep = names; names = [nm]
        Sim.__init__ = init
        r = run(dict(make=make2, ctx=variant["ctx"]))
        Sim.__init__ = orig_init; names = keep
        nfr = len(z[nm + "_k"])
        for k in tot: tot[k] += r[k] * nfr
        nf += nfr
    return {k: round(v / nf, 1) for k, v in tot.items()}
if __name__ == "__main__" and "--init" in sys.argv[1:] or True:
    pass
