import numpy as np, traceback
from sparsify.experiment.models import init_model
from sparsify.experiment.run import prune_with
for m in ("lenet","resnet"):
    net = init_model(m, 64, 10, rng=0)
    X = np.random.default_rng(1).standard_normal((20,1,8,8)); y = np.arange(20)%10
    for meth in ["sipp-det","sipp-rand","sipp-hybrid","sipp-det-balanced","magnitude-global","magnitude-layer","random","snip","wanda"]:
        try:
            r = prune_with(meth, net, X, y, 0.3, 0, delta=1e-16, C=3.0)
            print(m, meth, "ok", sum(np.count_nonzero(w) for w in r.network.weights), [w.shape for w in r.masks][:2])
        except Exception as e:
            print(m, meth, "FAIL", type(e).__name__, str(e)[:200])
