"""How good a clustering is, from reductions over all rows (only small results reach the client).

evaluate (the one scoring pass and the typed Evaluation it returns), scoring (that pass's kernels and the
internal criteria), metrics (contingency metrics, mappings to digits, silhouette and PCA of a sample),
classifier (clusters read as digits on held-out data), examples (which images to show per cluster),
choose_k (a k suggested by the internal criteria of a sweep).
May use: job.engine, data_prep.digits, scipy, dask, distributed.
"""
