"""Train the baseline model on synthetic data (run: python train_model.py)."""
import numpy as np
from sklearn.linear_model import SGDClassifier

N_ROWS = 1_000_000
N_COLS = 10_000

rng = np.random.default_rng(0)
X = rng.random((N_ROWS, N_COLS))
y = (X[:, 0] > 0.5).astype(int)

clf = SGDClassifier(max_iter=5)
clf.fit(X, y)
print(clf.score(X, y))
