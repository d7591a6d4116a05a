#!/usr/bin/env python3
"""Train the digits module's network and export its weights and sample inputs.

The model is a 64-32-10 multilayer perceptron (ReLU, softmax) trained with
scikit-learn on its bundled 8x8 handwritten digits (`load_digits`, no download).
Inputs are the 64 pixel intensities scaled from 0..16 to 0..1.

Writes, next to this script:
- weights.bin: "DGW1", then u32 LE dims (64, 32, 10), then f32 LE values:
  W1 (64x32, row-major: input-major), b1 (32), W2 (32x10), b2 (10);
- samples/digit-N.pgm: one held-out test image per digit (plain PGM, dark ink on white);
- samples/expected.json: what the model predicts for each sample (the Rust module
  must agree).

Re-running it reproduces the committed files (fixed random_state and split).
Usage: pip install scikit-learn numpy && python3 train.py
"""
import json
import os
import struct

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))

digits = load_digits()
X = digits.data / 16.0
y = digits.target
X_train, X_test, y_train, y_test, img_train, img_test = train_test_split(
    X, y, digits.images, test_size=0.25, random_state=0, stratify=y
)
model = MLPClassifier(hidden_layer_sizes=(32,), activation="relu", alpha=1e-4,
                      max_iter=600, random_state=0)
model.fit(X_train, y_train)
accuracy = model.score(X_test, y_test)
print(f"test accuracy: {accuracy:.4f} on {len(y_test)} held-out images")

w1, w2 = model.coefs_
b1, b2 = model.intercepts_
with open(os.path.join(HERE, "weights.bin"), "wb") as f:
    f.write(b"DGW1")
    f.write(struct.pack("<3I", 64, 32, 10))
    for arr in (w1, b1, w2, b2):
        f.write(np.asarray(arr, dtype="<f4").tobytes(order="C"))

samples = os.path.join(HERE, "samples")
os.makedirs(samples, exist_ok=True)
expected = {}
for digit in range(10):
    i = int(np.flatnonzero(y_test == digit)[0])
    image = img_test[i].astype(int)
    name = f"digit-{digit}.pgm"
    with open(os.path.join(samples, name), "w") as f:
        f.write("P2\n# 8x8 handwritten digit from scikit-learn's load_digits (test split)\n")
        f.write("8 8\n16\n")
        for row in image:
            f.write(" ".join(f"{16 - v:2d}" for v in row) + "\n")
    proba = model.predict_proba(X_test[i : i + 1])[0]
    expected[name] = {"label": digit, "predicted": int(np.argmax(proba))}
with open(os.path.join(samples, "expected.json"), "w") as f:
    json.dump({"test_accuracy": round(accuracy, 4), "samples": expected}, f, indent=2, sort_keys=True)
    f.write("\n")
