"""K-Means itself: the estimator with dask-ml's contract, its initialisation and its fitting strategies.

estimator (FusedKMeans: parameters declared once, fit/predict/transform/score), validation (what X and
sample_weight may be), passes (a Lloyd step, the inertia, labels and empty-cluster re-seeding over all
rows), kmeans_parallel (k-means|| on a dask array), sampling (the seeded sample and how big it is),
in_memory (k-means++ and Hamerly's Lloyd on a sample held by one task).
May use: job.engine, scikit-learn (for the contract), dask.
"""
