#!/usr/bin/env python3
"""Train EagleRank's ranking model from the simulator's impression log.

    cargo run --release -- simulate --requests 20000 --out training/data/impressions.jsonl
    .venv/bin/python training/train.py training/data/impressions.jsonl

Reads the exact feature vectors the service served (no train/serve skew), trains a LightGBM
LambdaRank model on 80 % of the users, evaluates NDCG@20 on the other 20 % against a popularity
ranking, exports ONNX with the input/output names the service expects, and writes
models/<name>.onnx plus models/<name>.json (feature order, probe rows, offline metrics, and
the reference distributions the service's drift monitor compares served traffic with).
"""

import argparse
import hashlib
import json
import sys
import time
import zlib
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.metrics import ndcg_score

SEED = 20261125
INPUT, OUTPUT = "input", "variable"
# Decile bins: PSI over ~10 bins is the usual industry reading (0.1 watch, 0.25 act).
REFERENCE_BINS = 10


def reference(values):
    """Interior bin edges at the deciles (duplicates dropped: binary or sparse features get fewer
    bins) and the share of values per bin. A value v falls in bin #{edges <= v}; the service
    bins served values the same way (`partition_point(|e| e <= v)`)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, REFERENCE_BINS + 1)[1:-1]))
    bins = np.searchsorted(edges, values, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {
        "edges": [float(e) for e in edges],
        "proportions": [round(float(c) / len(values), 6) for c in counts],
    }


def reference_stats(names, x, scores):
    """What serving should look like: every logged feature vector (shown items of an unbiased
    logging policy, i.e. a random sample of the candidates the ranker scores) and its score."""
    return {
        "rows": int(len(x)),
        "features": {n: reference(x[:, i]) for i, n in enumerate(names)},
        "score": reference(scores),
    }


def load(path):
    with open(path) as f:
        schema = json.loads(f.readline())
        rows = [json.loads(line) for line in f]
    names = schema["features"]
    x = np.array([r["features"] for r in rows], dtype=np.float32)
    y = np.array([r["label"] for r in rows], dtype=np.int32)
    request = np.array([r["request"] for r in rows])
    users = [r["user_id"] for r in rows]
    return schema, names, x, y, request, users


def held_out(user):
    # Stable across runs and machines (unlike Python's hash()).
    return zlib.crc32(user.encode()) % 5 == 0


def group_sizes(request):
    # Rows of one request are contiguous in the log.
    _, sizes = np.unique(request, return_counts=True)
    order = np.argsort(np.unique(request, return_index=True)[1])
    return sizes[order]


def mean_ndcg(scores, y, request, k=20):
    values = []
    for r in np.unique(request):
        m = request == r
        if y[m].sum() == 0:
            continue  # no click: every order is equally good
        values.append(ndcg_score([y[m]], [scores[m]], k=k))
    return float(np.mean(values)), len(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path)
    ap.add_argument("--out-dir", type=Path, default=Path("models"))
    ap.add_argument("--name", default=None, help="output file stem (default: ranker, ranker-linear)")
    ap.add_argument("--model", choices=["lgbm", "linear"], default="lgbm",
                    help="lgbm: the LambdaRank trees (committed default); linear: a standardised ridge "
                         "regression, a cheap model that shows the service's own overhead")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--leaves", type=int, default=15)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    args = ap.parse_args()

    schema, names, x, y, request, users = load(args.log)
    test = np.array([held_out(u) for u in users])
    train = ~test
    print(f"{len(y)} impressions, {int((y > 0).sum())} clicks, {len(names)} features; "
          f"train {int(train.sum())} rows, held-out {int(test.sum())} rows", file=sys.stderr)

    if args.model == "linear":
        return train_linear(args, schema, names, x, y, request, train, test)

    model = lgb.LGBMRanker(
        objective="lambdarank",
        n_estimators=args.trees,
        num_leaves=args.leaves,
        learning_rate=args.learning_rate,
        min_child_samples=50,
        subsample=1.0,
        colsample_bytree=1.0,
        random_state=SEED,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(x[train], y[train], group=group_sizes(request[train]))

    scores = model.predict(x[test])
    onnx_model = convert_lightgbm(
        model.booster_, initial_types=[(INPUT, FloatTensorType([None, len(names)]))],
        zipmap=False, target_opset=15)
    write_model(args, schema, names, x, y, request, test, scores, onnx_model, "eaglerank-lgbm-lambdarank", {
        "algorithm": "LightGBM LGBMRanker (lambdarank)",
        "trees": args.trees,
        "leaves": args.leaves,
        "learning_rate": args.learning_rate,
    })


def train_linear(args, schema, names, x, y, request, train, test):
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType as SklFloat

    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0, random_state=SEED))
    model.fit(x[train], (y[train] > 0).astype(np.float32))
    scores = model.predict(x[test])
    # Exported as one linear function: ONNX Runtime's Scaler op took ~15 us of a 500-row batch
    # and the LinearRegressor ~3 us. Standardising is linear, so it folds into the weights:
    # w . (x - mean) / scale + b  =  (w / scale) . x + (b - w . mean / scale).
    scaler, ridge = model.named_steps["standardscaler"], model.named_steps["ridge"]
    folded = LinearRegression()
    folded.coef_ = (ridge.coef_ / scaler.scale_).astype(np.float64)
    folded.intercept_ = float(ridge.intercept_ - np.dot(ridge.coef_, scaler.mean_ / scaler.scale_))
    folded.n_features_in_ = len(names)
    onnx_model = convert_sklearn(folded, initial_types=[(INPUT, SklFloat([None, len(names)]))], target_opset=15)
    write_model(args, schema, names, x, y, request, test, scores, onnx_model, "eaglerank-linear", {
        "algorithm": "StandardScaler + Ridge regression on the click label, the scaler folded into the weights",
    })


def write_model(args, schema, names, x, y, request, test, scores, onnx_model, model_name, algorithm):
    model_ndcg, groups = mean_ndcg(scores, y[test], request[test])
    popularity = x[test][:, names.index("item_trending")]
    pop_ndcg, _ = mean_ndcg(popularity, y[test], request[test])
    ctr_ndcg, _ = mean_ndcg(x[test][:, names.index("item_ctr")], y[test], request[test])
    rng = np.random.default_rng(SEED)
    random_ndcg, _ = mean_ndcg(rng.random(int(test.sum())), y[test], request[test])
    output_name = onnx_model.graph.output[0].name
    data = onnx_model.SerializeToString()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    onnx_scores = sess.run([output_name], {INPUT: x[test]})[0].reshape(-1)
    max_diff = float(np.max(np.abs(onnx_scores - scores)))
    assert max_diff < 1e-4, f"ONNX disagrees with the trained model by {max_diff}"

    batch = x[:500] if len(x) >= 500 else x
    for _ in range(20):
        sess.run([output_name], {INPUT: batch})
    timings = []
    for _ in range(200):
        t = time.perf_counter()
        sess.run([output_name], {INPUT: batch})
        timings.append(time.perf_counter() - t)
    timings.sort()

    all_scores = sess.run([output_name], {INPUT: x})[0].reshape(-1)

    probe_rows = x[test][:8]
    probe_expected = sess.run([output_name], {INPUT: probe_rows})[0].reshape(-1)

    digest = hashlib.sha256(data).hexdigest()[:12]
    meta = {
        "name": model_name,
        "version": f"{time.strftime('%Y.%m.%d')}-{digest}",
        "input": INPUT,
        "output": output_name,
        "features": names,
        "probe": {
            "rows": probe_rows.tolist(),
            "expected": [float(v) for v in probe_expected],
            "tolerance": 1e-4,
        },
        "reference": reference_stats(names, x, all_scores),
        "training": algorithm | {
            "data": {
                "log": str(args.log),
                "tenant": schema.get("tenant"),
                "policy": schema.get("policy"),
                "requests": schema.get("requests"),
                "impressions": int(len(y)),
                "clicks": int((y > 0).sum()),
                "held_out_users": "crc32(user_id) % 5 == 0",
            },
            "offline": {
                "ndcg@20_model": round(model_ndcg, 4),
                "ndcg@20_popularity": round(pop_ndcg, 4),
                "ndcg@20_ctr": round(ctr_ndcg, 4),
                "ndcg@20_random": round(random_ndcg, 4),
                "held_out_requests_with_clicks": groups,
            },
            "inference_ms_per_500_rows": {
                "p50": round(timings[len(timings) // 2] * 1e3, 4),
                "p99": round(timings[int(len(timings) * 0.99)] * 1e3, 4),
                "runtime": f"onnxruntime {ort.__version__}, 1 thread",
                "rows": int(len(batch)),
            },
            "onnx_vs_trained_max_abs_diff": max_diff,
            "seed": SEED,
        },
    }
    name = args.name or {"lgbm": "ranker", "linear": "ranker-linear"}[args.model]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.onnx").write_bytes(data)
    (args.out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["training"]["offline"] | {"inference_ms_per_500_rows": meta["training"]["inference_ms_per_500_rows"]}, indent=2))


if __name__ == "__main__":
    main()
