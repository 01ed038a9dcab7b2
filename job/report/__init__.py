"""What people look at: figures (PNG, matplotlib's object API), the self-contained report.html and live
progress page, and the run's files (metrics.json, model.npz, the text summary).
May use: data_prep.digits, numpy, matplotlib; it reads results, it never computes them.
"""
