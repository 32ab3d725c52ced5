import cProfile, pstats, io, tempfile, pathlib
from sparsify import experiment as E
cfg = E.ExperimentConfig.from_dict(dict(data="digits", model="lenet", epochs=1, retrain_epochs=1, milestones=[], retrain_milestones=[], keeps=[0.3], seeds=[0], s_size=8, lottery=False, mode="oneshot", methods=list(E.METHODS)))
d = tempfile.mkdtemp()
pr = cProfile.Profile(); pr.enable()
E.run_experiment(cfg, pathlib.Path(d)/"x", log=io.StringIO(), plots=False)
pr.disable()
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(25); print(s.getvalue()[:5000])
