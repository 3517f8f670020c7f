#!/usr/bin/env python3
"""Train EagleRank's ranking model from the simulator's impression log or a live training set.

    cargo run --release -- simulate --requests 20000 --out training/data/impressions.jsonl
    .venv/bin/python training/train.py training/data/impressions.jsonl

Reads the exact feature vectors the service served (no train/serve skew), trains a LightGBM
LambdaRank model on 80 % of the users, evaluates NDCG@20 on the other 20 % against a popularity
ranking, exports ONNX with the input/output names the service expects, and writes
models/<name>.onnx plus models/<name>.json (feature order, probe rows, offline metrics, and
the reference distributions the service's drift monitor compares served traffic with).

A live training set, exported by the service from its served-feature log joined with the
clicks, add-to-carts and purchases that followed (graded labels 0..3), trains the same way:

    eaglerank dataset export --out live.jsonl
    .venv/bin/python training/train.py live.jsonl --match-metadata models/ranker.json \\
        --name ranker-live --model-name eaglerank-lgbm-live

It has the log's shape (schema line, then one row per shown item, a request's rows
contiguous) and is recognised by its schema's `"policy": "live"` or its rows' `ts`. Its
held-out set is the last 20 % of requests by serving time, not a fifth of the users: a model
is deployed on the traffic that comes after its data, and users' behaviour drifts. The
offline metrics add ndcg@20_served, the NDCG of the scores the serving model logged on the
same held-out feeds: did the new model rank what was clicked and bought above where the
served ranking put it? --match-metadata refuses a set whose features (names, order) are not
the named model's, and --model-name gives the model its own name, since the service refuses
two loaded models with one name.

A first stage for two-stage ranking (a cheap model scores all ~500 candidates of a feed, the
GBDT only its top K) is a linear function distilled from the committed GBDT, the teacher:

    eaglerank simulate --requests 20000 --anchor 1790000000 --out training/data/impressions.jsonl \\
        --candidates-out training/data/candidates.jsonl --candidates-every 10
    .venv/bin/python training/train.py training/data/impressions.jsonl --model first-stage \\
        --candidates training/data/candidates.jsonl

It learns the teacher's scores on every candidate of the sampled requests (what a first stage
ranks: not only the shown items) of the training users, writes models/ranker-first-stage.* with
the teacher's features in the teacher's order (the service assembles one matrix for both
stages), and reports the cascade on the held-out users' candidate groups: for K in 20..200, the
share of the teacher's top 20 the first stage's top K keeps, and the NDCG@20 of that top K
re-ordered by the teacher, graded by the simulator's true click probability.

Whatever would fail half-way or train quietly on the wrong thing (an empty or truncated file,
a corrupt line, feature vectors of the wrong length) is refused up front: a message on
stderr, exit status 2, no file written.
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
# A live training set's graded labels, by value.
LIVE_LABELS = ("none", "click", "add_to_cart", "purchase")
# The offline baselines rank by these features.
BASELINE_FEATURES = ("item_trending", "item_ctr")
# A feed's first page: the teacher's top FEED_TOP is what a first stage must keep, NDCG@FEED_TOP
# what the served feed is judged by.
FEED_TOP = 20
# The first stage's cuts the cascade report measures, and the one its variants are chosen at.
CASCADE_KS = (20, 50, 100, 200)
SELECT_AT = 100
# The pairwise first stage's pairs: this many other candidates per teacher-top candidate.
PAIR_NEGATIVES = 20


class Refused(Exception):
    """A data set (or option) this script will not train from. main() prints the reason and
    exits 2 before any file is written: a half-written model next to a good one is worse than
    none."""


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


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)



def read_schema(f):
    """Line 1 of a simulator log (impressions or candidates): the schema, with its list of
    feature names. Refused, saying what is wrong, rather than failing later on its absence."""
    first = f.readline()
    if not first.strip():
        raise Refused("the file is empty")
    try:
        schema = json.loads(first)
    except json.JSONDecodeError as e:
        raise Refused(f"line 1 (the schema) is corrupt: {e.msg} at column {e.colno}") from None
    names = schema.get("features") if isinstance(schema, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise Refused("line 1 is not a schema: no list of feature names under \"features\"")
    return schema, names


def read_log(path, what, required):
    """A simulator log (impressions or candidates), read as it is checked: yields (schema,
    names) first, then (line number, row) for each non-blank line — a JSON object (a `what`)
    with a "request" id (a string or an integer), a string "user_id" and the `required` keys.
    A file that cannot be read or decoded, or a line that is not such an object, is refused
    naming the line, whatever the caller then checks."""
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            yield read_schema(f)
            number = 1  # the last line read, for a decoding error's message
            for number, line in enumerate(f, start=2):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip())  # without the newline, the error's column is on the line
                except json.JSONDecodeError as e:
                    raise Refused(f"line {number} is corrupt: {e.msg} at column {e.colno}") from None
                if not isinstance(row, dict):
                    raise Refused(f"line {number} is not a {what} object")
                for key in ("request", "user_id", *required):
                    if key not in row:
                        raise Refused(f"line {number} has no \"{key}\"")
                request = row["request"]
                if not isinstance(request, (str, int)) or isinstance(request, bool):
                    raise Refused(f"line {number}: request {request!r} is neither a string nor an integer")
                if not isinstance(row["user_id"], str):
                    raise Refused(f"line {number}: user_id {row['user_id']!r} is not a string")
                yield number, row
    except OSError as e:
        raise Refused(f"cannot read it: {e.strerror}") from None
    except UnicodeDecodeError:
        # Decoded in blocks: the line is approximate.
        raise Refused(f"it is not UTF-8 text (near line {number + 1})") from None

def load(path):
    """The schema and the rows as arrays, plus for a live training set (None for the simulator's
    log) each row's serving time and logged score. Checked as it is read, so that a bad file is
    refused naming the line rather than failing in numpy or LightGBM, or training on shifted
    columns: a row's feature vector must be as long as the schema's names (null stays allowed:
    it reads as NaN, LightGBM's missing value) and a request's rows contiguous (the LambdaRank
    groups are runs of one request)."""
    log = read_log(path, "row", ("label", "features"))
    schema, names = next(log)
    rows, lines = [], []
    seen, previous = set(), None
    for number, row in log:
        features = row["features"]
        if not isinstance(features, list) or len(features) != len(names):
            got = len(features) if isinstance(features, list) else "no list of"
            raise Refused(f"line {number} has {got} feature values, the schema names {len(names)}")
        if not all(v is None or is_number(v) for v in features):
            raise Refused(f"line {number} has a feature value that is not a number")
        label = row["label"]
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise Refused(f"line {number}: label {label!r} is not a non-negative integer")
        request = row["request"]
        if request != previous:
            if request in seen:
                raise Refused(f"line {number}: request {request!r} resumes after other "
                              "requests' rows (a request's rows must be contiguous)")
            seen.add(request)
            previous = request
        rows.append(row)
        lines.append(number)
    if not rows:
        raise Refused("it has a schema line but no rows")
    announced = schema.get("rows")
    if announced is not None and announced != len(rows):
        raise Refused(f"the schema announces {announced} rows, the file holds {len(rows)} "
                      "(a truncated export?)")

    x = np.array([r["features"] for r in rows], dtype=np.float32)
    y = np.array([r["label"] for r in rows], dtype=np.int32)
    request = np.array([r["request"] for r in rows])
    users = [r["user_id"] for r in rows]

    live = None
    if schema.get("policy") == "live" or any("ts" in r for r in rows):
        for r, number in zip(rows, lines):
            if not is_number(r.get("ts")):
                raise Refused(f"line {number}: a live training set's row needs its serving time \"ts\"")
            if r["label"] >= len(LIVE_LABELS):
                raise Refused(f"line {number}: label {r['label']} is past the graded labels 0..3")
        live = {
            "ts": np.array([r["ts"] for r in rows], dtype=np.float64),
            # A feed served without a model score (none logged) cannot be judged as served.
            "logged_score": np.array(
                [r["logged_score"] if is_number(r.get("logged_score")) else np.nan for r in rows],
                dtype=np.float64),
        }
    return schema, names, x, y, request, users, live


def match_features(names, metadata_path):
    """Refuses a data set whose features are not, in order, those of the model the new one is to
    replace or serve beside: the service builds one feature vector per model from its metadata,
    so a different list would be another model (and another feature pipeline)."""
    try:
        expected = json.loads(Path(metadata_path).read_text())["features"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Refused(f"cannot read the feature list of {metadata_path}: {e}") from None
    if names == expected:
        return
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"extra {', '.join(extra)}")
    if not problems:  # the same names, reordered or repeated
        at = next((i for i, (a, b) in enumerate(zip(names, expected)) if a != b),
                  min(len(names), len(expected)))
        ours = names[at] if at < len(names) else "nothing"
        theirs = expected[at] if at < len(expected) else "nothing"
        problems.append(f"same names in another order or repeated: feature #{at} is {ours}, "
                        f"{metadata_path} has {theirs} there")
    counts = f" ({len(names)} against {len(expected)})" if len(names) != len(expected) else ""
    raise Refused(f"its features differ from {metadata_path}'s{counts}: {'; '.join(problems)}")


def held_out(user):
    # Stable across runs and machines (unlike Python's hash()).
    return zlib.crc32(user.encode()) % 5 == 0


def time_split(request, ts):
    """A live training set's held-out rows: those of the last 20 % of requests by serving time
    (a request's time is its earliest row's; ties keep the file's order). Returns the mask and
    the first held-out time. In time rather than by user because a model serves the traffic
    after its data: this is the evaluation that can see drift."""
    ids, first, inverse = np.unique(request, return_index=True, return_inverse=True)
    request_ts = np.full(len(ids), np.inf)
    np.minimum.at(request_ts, inverse, ts)
    by_time = np.lexsort((first, request_ts))
    cut = len(ids) * 4 // 5  # integer arithmetic: no 0.8 rounding at the boundary
    if cut == 0 or cut == len(ids):
        raise Refused(f"{len(ids)} request(s) cannot be split into training and held-out sets")
    held = np.zeros(len(ids), dtype=bool)
    held[by_time[cut:]] = True
    return held[inverse], float(request_ts[by_time[cut]])


def float32_thresholds(booster):
    """The same trees with every split threshold rounded down to a float32.

    LightGBM splits at a double midway between two feature values; ONNX's TreeEnsemble stores
    float32 thresholds. Where two float32 values are closer than float32 resolution (live
    features such as item_trending or item_age_days are), the midpoint rounds onto the upper
    value and ONNX sends that value the other way (seen: 33 of 12 000 rows off by up to 0.25).
    For float32 inputs, `x <= t` holds exactly when `x <= (largest float32 <= t)`, so rounding
    down changes no decision of the trees on the data they serve — and ONNX then agrees."""
    def down(match):
        values = []
        for text in match.group(1).split(" "):
            t = float(text)
            f = np.float32(t)
            if float(f) > t:
                f = np.nextafter(f, np.float32(-np.inf))
            values.append(repr(float(f)))
        return "threshold=" + " ".join(values)

    import re
    text = re.sub(r"^threshold=(.*)$", down, booster.model_to_string(), flags=re.M)
    # The header's byte sizes of the trees no longer hold; without it LightGBM scans for them.
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)
    return lgb.Booster(model_str=text)


def group_sizes(request):
    # Rows of one request are contiguous in the log (load() refuses a file where they are not).
    _, sizes = np.unique(request, return_counts=True)
    order = np.argsort(np.unique(request, return_index=True)[1])
    return sizes[order]


def mean_ndcg(scores, y, request, k=20):
    """Mean NDCG@k over the requests with a positive label. The rows are grouped by one sort (a
    mask per request is quadratic: minutes on a large live set) into the same requests, in the
    same order (np.unique's), each with its rows in log order, as a mask per request gave: the
    committed models' numbers are unchanged."""
    _, inverse, counts = np.unique(request, return_inverse=True, return_counts=True)
    by_request = np.argsort(inverse, kind="stable")
    values = []
    for m in np.split(by_request, np.cumsum(counts)[:-1]):
        if y[m].sum() == 0:
            continue  # no click: every order is equally good
        if len(m) < 2:
            continue  # a single item shown has one order (and sklearn refuses to score it)
        if not np.isfinite(scores[m]).all():
            continue  # a feed served without a logged score cannot be judged as served
        values.append(ndcg_score([y[m]], [scores[m]], k=k))
    return (float(np.mean(values)) if values else None), len(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path)
    ap.add_argument("--out-dir", type=Path, default=Path("models"))
    ap.add_argument("--name", default=None, help="output file stem (default: ranker, ranker-linear)")
    ap.add_argument("--model-name", default=None,
                    help="the metadata's model name (default: eaglerank-lgbm-lambdarank, eaglerank-linear); "
                         "the service refuses two loaded models with one name, so a model served beside "
                         "the committed one needs its own, e.g. eaglerank-lgbm-live")
    ap.add_argument("--match-metadata", type=Path, default=None, metavar="PATH",
                    help="refuse (exit 2) a data set whose feature names, in order, are not those of "
                         "this model metadata, e.g. models/ranker.json")
    ap.add_argument("--model", choices=["lgbm", "linear", "first-stage"], default="lgbm",
                    help="lgbm: the LambdaRank trees (committed default); linear: a standardised ridge "
                         "regression, a cheap model that shows the service's own overhead; first-stage: "
                         "a linear model distilled from --teacher on --candidates, to pick the K "
                         "candidates the GBDT scores")
    ap.add_argument("--candidates", type=Path, default=None, metavar="PATH",
                    help="first-stage: every candidate of sampled requests, from `eaglerank simulate "
                         "--candidates-out`, e.g. training/data/candidates.jsonl (required)")
    ap.add_argument("--teacher", type=Path, default=Path("models/ranker.onnx"), metavar="PATH",
                    help="first-stage: the model to distil (its metadata is the .json beside it)")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--leaves", type=int, default=15)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    args = ap.parse_args()
    if args.model == "first-stage" and args.candidates is None:
        ap.error("--model first-stage needs --candidates (from `eaglerank simulate --candidates-out`)")

    try:
        schema, names, x, y, request, users, live = load(args.log)
        if args.match_metadata is not None:
            match_features(names, args.match_metadata)
        absent = [n for n in BASELINE_FEATURES if n not in names]
        if absent:
            raise Refused(f"the offline baselines need the features {', '.join(absent)}")
        if live is None:
            test = np.array([held_out(u) for u in users])
        else:
            test, live["held_out_since"] = time_split(request, live["ts"])
        train = ~test
        # Checked here rather than met as a LightGBM error or a NaN metric after training.
        if not (y[train] > 0).any():
            raise Refused("its training rows have no positive label: nothing to learn")
        _, held = np.unique(request[test], return_inverse=True)
        judged = (np.bincount(held, weights=y[test] > 0) > 0) & (np.bincount(held) >= 2)
        if not judged.any():
            raise Refused("no held-out request of two or more rows has a positive label: nothing to evaluate")
    except Refused as e:
        print(f"train.py: refusing to train from {args.log}: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{len(y)} impressions, {int((y > 0).sum())} clicks, {len(names)} features; "
          f"train {int(train.sum())} rows, held-out {int(test.sum())} rows", file=sys.stderr)
    if live is not None:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(live["held_out_since"]))
        print(f"live training set: held out the requests served from {since} on", file=sys.stderr)

    if args.model == "linear":
        return train_linear(args, schema, names, x, y, request, train, test, live)
    if args.model == "first-stage":
        return train_first_stage(args, schema, names, x, y, request, users, train, test, live)

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

    booster = float32_thresholds(model.booster_)
    scores = booster.predict(x[test])
    onnx_model = convert_lightgbm(
        booster, initial_types=[(INPUT, FloatTensorType([None, len(names)]))],
        zipmap=False, target_opset=15)
    write_model(args, schema, names, x, y, request, test, scores, onnx_model, live, "eaglerank-lgbm-lambdarank", {
        "algorithm": "LightGBM LGBMRanker (lambdarank)",
        "trees": args.trees,
        "leaves": args.leaves,
        "learning_rate": args.learning_rate,
    })


def train_linear(args, schema, names, x, y, request, train, test, live):
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType as SklFloat

    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0, random_state=SEED))
    # Any positive label is a click (graded live labels included): a regression on the click.
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
    write_model(args, schema, names, x, y, request, test, scores, onnx_model, live, "eaglerank-linear", {
        "algorithm": "StandardScaler + Ridge regression on the click label, the scaler folded into the weights",
    })


def session(model):
    """An ONNX Runtime session as the service runs a model: one thread. `model` is the ONNX bytes or
    a path."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def predict(sess, input_name, output_name, x):
    return sess.run([output_name], {input_name: x})[0].reshape(-1)


def load_teacher(path):
    """The model a first stage is distilled from, and its metadata (the .json beside it): the
    feature order, which the first stage keeps (the service assembles one matrix for both stages),
    and the tensor names."""
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        features, input_name, output_name = meta["features"], meta["input"], meta["output"]
    except OSError as e:
        raise Refused(f"cannot read its metadata {meta_path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise Refused(f"cannot read its metadata {meta_path}: {type(e).__name__} {e}") from None
    if not isinstance(features, list) or not features or not all(isinstance(n, str) for n in features):
        raise Refused(f"{meta_path} has no list of feature names under \"features\"")
    try:
        sess = session(str(path))
    except Exception as e:  # ONNX Runtime raises its own types: no file, not a model, ...
        raise Refused(f"ONNX Runtime cannot load it: {e}") from None
    if input_name not in [i.name for i in sess.get_inputs()] or \
            output_name not in [o.name for o in sess.get_outputs()]:
        raise Refused(f"it has no input {input_name!r} or no output {output_name!r}, which {meta_path} names")
    return sess, meta


def numbers(value, shape, number, what, layout=""):
    """A line's nested JSON lists as a float64 array of `shape`, null read as NaN. One numpy
    conversion per line (a Python check of ~7 000 values a line would dominate the load); only
    a line numpy cannot read as numbers is looked at value by value."""
    try:
        a = np.array(value)
    except ValueError:  # ragged lists
        a = None
    if a is None or a.shape != shape:
        raise Refused(f"line {number}: \"{what}\" is not {' x '.join(map(str, shape))} values{layout}")
    if a.dtype.kind == "O" and all(v is None or is_number(v) for v in a.flat):
        return np.array(value, dtype=np.float64)
    if a.dtype.kind not in "iuf":
        raise Refused(f"line {number}: \"{what}\" has a value that is not a number")
    return a.astype(np.float64)


def load_candidates(path, wanted):
    """Every candidate of the requests `eaglerank simulate --candidates-out` sampled: a schema line
    (the simulator's whole feature catalogue), then one line per request with its ~500
    candidates' feature vectors and true click probabilities. Keeps the columns named `wanted`,
    in that order. Checked as it is read, like load(): a bad line is refused by its number rather
    than scored on shifted columns. Returns the schema and, concatenated request after request,
    the rows, their p_click, each request's candidate count, id and user."""
    log = read_log(path, "request", ("item_ids", "p_click", "features"))
    schema, names = next(log)
    missing = [n for n in wanted if n not in names]
    if missing:
        raise Refused(f"it has no column for the teacher's feature(s) {', '.join(missing)}")
    columns = [names.index(n) for n in wanted]
    xs, clicks, sizes, requests, users = [], [], [], [], []
    seen = set()
    for number, row in log:
        request = row["request"]
        if request in seen:
            raise Refused(f"line {number}: request {request!r} appears twice")
        seen.add(request)
        if not isinstance(row["item_ids"], list) or not row["item_ids"]:
            raise Refused(f"line {number}: \"item_ids\" is not a non-empty list")
        n = len(row["item_ids"])
        x = numbers(row["features"], (n, len(names)), number, "features",
                    " (a vector per item id, a value per schema name)")
        # The service fills a missing value before it scores: a null is not what it ranks.
        if not np.isfinite(x[:, columns]).all():
            raise Refused(f"line {number}: a feature value is null or not finite")
        p_click = numbers(row["p_click"], (n,), number, "p_click", " (one per item id)")
        if not (np.isfinite(p_click) & (p_click >= 0) & (p_click <= 1)).all():
            raise Refused(f"line {number}: a p_click is not a probability")
        xs.append(x[:, columns].astype(np.float32))
        clicks.append(p_click)
        sizes.append(n)
        requests.append(request)
        users.append(row["user_id"])
    if not xs:
        raise Refused("it has a schema line but no requests")
    # A warning, not a refusal: fewer groups train and judge the same model, only on less data.
    announced, every = schema.get("requests"), schema.get("every")
    if isinstance(announced, int) and isinstance(every, int) and every > 0 and len(xs) < announced // every:
        print(f"train.py: {path} holds {len(xs)} requests, its schema announces one in {every} of "
              f"{announced} (a truncated file?)", file=sys.stderr)
    return schema, {
        "x": np.concatenate(xs),
        "p_click": np.concatenate(clicks),
        "sizes": np.array(sizes),
        "request": requests,
        "users": users,
    }


def validation(user):
    # A fifth of the training users (held_out() takes crc32 % 5 == 0) choose between the variants.
    return zlib.crc32(user.encode()) % 5 == 1


def groups(sizes):
    """Each request's rows, as slices: the candidate rows are concatenated request after request."""
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def subset(mask, sizes, *arrays):
    """The requests `mask` picks: their sizes, then their rows of each array."""
    rows = np.repeat(mask, sizes)
    return (sizes[mask],) + tuple(a[rows] for a in arrays)


def top(scores, k):
    # Ties (the GBDT's leaves give alike candidates one score) go to the earlier row: deterministic.
    return np.argsort(-scores, kind="stable")[:k]


def within_request(values, sizes):
    """`values` less their request's mean. A first stage only compares the candidates of one
    request: a request's score level, and the user's own features every candidate shares, are no
    signal for it (and would bend the weights towards predicting who scores high overall)."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    means = np.add.reduceat(values, starts, axis=0) / sizes.reshape((-1,) + (1,) * (values.ndim - 1))
    return values - np.repeat(means, sizes, axis=0)


def feature_scale(x):
    # Comparable columns for the penalty and the solver: item_age_days runs to hundreds, item_ctr below 1.
    scale = x.astype(np.float64).std(axis=0)
    scale[scale == 0] = 1.0
    return scale


def fit_ridge(x, target, sizes):
    """Ridge regression of the teacher's score on the features, both centred per request (the
    within-request fit: a feature all of a request's candidates share gets no weight). Returns the
    weights on the raw features."""
    from sklearn.linear_model import Ridge
    scale = feature_scale(x)
    xc = within_request(x.astype(np.float64), sizes) / scale
    tc = within_request(target.astype(np.float64), sizes)
    return Ridge(alpha=1.0, fit_intercept=False).fit(xc, tc).coef_ / scale


def fit_pairwise(x, target, sizes):
    """Logistic regression on pairs (one of the teacher's top FEED_TOP, another candidate of the
    same request): the linear function that best puts the teacher's top above the rest, all that
    recall asks (the order inside the top is the teacher's business in the second stage).
    PAIR_NEGATIVES others per top candidate, drawn with the fixed seed. Returns the weights on the
    raw features."""
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(SEED)
    scale = feature_scale(x)
    diffs = []
    for g in groups(sizes):
        order = top(target[g], g.stop - g.start)
        best, rest = order[:FEED_TOP], order[FEED_TOP:]
        if len(rest) == 0:
            continue  # every candidate is in the top: no pair to learn from
        others = rest[rng.integers(len(rest), size=(len(best), PAIR_NEGATIVES))]
        xg = x[g].astype(np.float64)
        diffs.append((xg[best][:, None, :] - xg[others]).reshape(-1, x.shape[1]))
    d = np.concatenate(diffs) / scale
    # Each pair both ways round: two balanced classes and no intercept (a pair has no side of its own).
    labels = np.r_[np.ones(len(d)), np.zeros(len(d))]
    model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=1000).fit(np.vstack([d, -d]), labels)
    return model.coef_[0] / scale


def recall(first, teacher, sizes, k):
    """Mean over requests of the share of the teacher's top FEED_TOP among the first stage's top k."""
    values = []
    for g in groups(sizes):
        best = top(teacher[g], FEED_TOP)
        values.append(len(np.intersect1d(best, top(first[g], k))) / len(best))
    return float(np.mean(values))


def cascade(first, teacher, p_click, sizes):
    """The two stages on held-out requests' candidates, for each K in CASCADE_KS: the share of the
    teacher's top FEED_TOP that the first stage's top K keeps, and NDCG@FEED_TOP of the feed the
    cascade serves (the top K re-ordered by the teacher), beside the teacher on every candidate,
    the first stage alone and a random order. Graded by p_click, the simulator's true,
    position-free click probability of every candidate: clicks exist only for shown items. A
    request of FEED_TOP candidates or fewer is left out (every K keeps all of them). Returns the
    metadata's record and a markdown table."""
    rng = np.random.default_rng(SEED)
    kept = [g for g in groups(sizes) if g.stop - g.start > FEED_TOP]
    ndcg = {name: [] for name in ("teacher", "first_stage", "random")}
    at = {k: {"recall": [], "ndcg": []} for k in CASCADE_KS}
    for g in kept:
        f, t, p = first[g], teacher[g].astype(np.float64), p_click[g]
        ndcg["teacher"].append(ndcg_score([p], [t], k=FEED_TOP))
        ndcg["first_stage"].append(ndcg_score([p], [f], k=FEED_TOP))
        ndcg["random"].append(ndcg_score([p], [rng.random(len(p))], k=FEED_TOP))
        best = top(t, FEED_TOP)
        for k in CASCADE_KS:
            chosen = top(f, k)
            at[k]["recall"].append(len(np.intersect1d(best, chosen)) / FEED_TOP)
            # The kept K in the teacher's order, the rest after them (below the top FEED_TOP, as K >= FEED_TOP).
            served = np.full(len(t), t.min() - 1.0)
            served[chosen] = t[chosen]
            at[k]["ndcg"].append(ndcg_score([p], [served], k=FEED_TOP))
    counts = np.array([g.stop - g.start for g in kept])
    record = {
        "held_out": "crc32(user_id) % 5 == 0",
        "requests": len(kept),
        "left_out_requests": len(sizes) - len(kept),
        "candidates_per_request": {"mean": round(float(counts.mean()), 1), "min": int(counts.min()),
                                   "max": int(counts.max())},
        "graded_by": "p_click",
        f"ndcg@{FEED_TOP}_teacher": round(float(np.mean(ndcg["teacher"])), 4),
        f"ndcg@{FEED_TOP}_first_stage": round(float(np.mean(ndcg["first_stage"])), 4),
        f"ndcg@{FEED_TOP}_random": round(float(np.mean(ndcg["random"])), 4),
        "k": [{"k": k, f"recall_of_teacher_top{FEED_TOP}": round(float(np.mean(at[k]["recall"])), 4),
               f"ndcg@{FEED_TOP}_cascade": round(float(np.mean(at[k]["ndcg"])), 4)} for k in CASCADE_KS],
    }
    lines = [
        f"Cascade on {len(kept)} held-out requests, {record['candidates_per_request']['mean']:.0f} candidates "
        f"each ({counts.min()}-{counts.max()}), graded by the true click probability:",
        "",
        f"| ranking | rows the GBDT scores | recall of the GBDT's top {FEED_TOP} | NDCG@{FEED_TOP} |",
        "|---|---:|---:|---:|",
        f"| GBDT on every candidate | all ({counts.mean():.0f}) | 1.000 | {record[f'ndcg@{FEED_TOP}_teacher']:.3f} |",
    ]
    for row in reversed(record["k"]):
        lines.append(f"| first stage's top {row['k']}, re-ordered by the GBDT | {row['k']} | "
                     f"{row[f'recall_of_teacher_top{FEED_TOP}']:.3f} | {row[f'ndcg@{FEED_TOP}_cascade']:.3f} |")
    lines.append(f"| first stage alone | 0 | — | {record[f'ndcg@{FEED_TOP}_first_stage']:.3f} |")
    lines.append(f"| random | 0 | — | {record[f'ndcg@{FEED_TOP}_random']:.3f} |")
    return record, "\n".join(lines)


def train_first_stage(args, schema, names, x, y, request, users, train, test, live):
    """A linear first stage distilled from the teacher on every candidate of the training users'
    sampled requests (module docstring). Two variants, a within-request ridge regression on the
    teacher's score and a pairwise logistic regression, are compared on a fifth of the training
    users by recall@SELECT_AT; the better one (ridge on a tie: the simpler) is refitted on all the
    training users, exported like --model linear and judged on the held-out users."""
    from sklearn.linear_model import LinearRegression
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType as SklFloat

    started = time.perf_counter()
    try:
        teacher, teacher_meta = load_teacher(args.teacher)
    except Refused as e:
        refuse(args.teacher, e)
    features = teacher_meta["features"]
    try:
        if live is not None:
            raise Refused("a first stage is distilled on the simulator's candidates, judged on its "
                          "held-out users: a live training set is split by time, its requests are not "
                          "the candidates file's")
        missing = [n for n in features if n not in names]
        if missing:
            raise Refused(f"it has no column for the teacher's feature(s) {', '.join(missing)}")
        absent = [n for n in BASELINE_FEATURES if n not in features]
        if absent:
            raise Refused(f"the offline baselines need the features {', '.join(absent)}, which the "
                          "teacher does not use")
    except Refused as e:
        refuse(args.log, e)
    try:
        candidate_schema, cand = load_candidates(args.candidates, features)
        if candidate_schema.get("tenant") != schema.get("tenant"):
            raise Refused(f"its tenant is {candidate_schema.get('tenant')!r}, the log's "
                          f"{schema.get('tenant')!r}: not the same simulation")
        # The candidates and the log come from one simulate run: a request is one user's in both.
        by_request = dict(zip(request.tolist(), users))
        for r, u in zip(cand["request"], cand["users"]):
            if r in by_request and by_request[r] != u:
                raise Refused(f"request {r!r} is user {u}'s, in the log user {by_request[r]}'s: "
                              "not the same simulation")
        held = np.array([held_out(u) for u in cand["users"]])
        if held.all() or not held.any():
            raise Refused(f"its {len(held)} request(s) cannot be split into training and held-out users")
    except Refused as e:
        refuse(args.candidates, e)
    sizes = cand["sizes"]
    print(f"{len(sizes)} candidate requests, {len(cand['x'])} candidates; training users "
          f"{int((~held).sum())} requests, held-out {int(held.sum())}", file=sys.stderr)

    # The teacher as the service runs it: its ONNX export, its column order.
    teacher_scores = predict(teacher, teacher_meta["input"], teacher_meta["output"], cand["x"])
    picked = np.array([validation(u) for u in cand["users"]])
    variants = {"ridge": fit_ridge, "pairwise": fit_pairwise}
    compared = {}
    if (~held & picked).any() and (~held & ~picked).any():
        fit_sizes, fit_x, fit_t = subset(~held & ~picked, sizes, cand["x"], teacher_scores)
        val_sizes, val_x, val_t = subset(~held & picked, sizes, cand["x"], teacher_scores)
        for variant, fit in variants.items():
            compared[variant] = round(recall(val_x @ fit(fit_x, fit_t, fit_sizes), val_t, val_sizes, SELECT_AT), 4)
        print(f"validation recall@{SELECT_AT} of the teacher's top {FEED_TOP}: "
              + ", ".join(f"{v} {r:.4f}" for v, r in compared.items()), file=sys.stderr)
    chosen = max(compared, key=compared.get) if compared else "ridge"  # max keeps the first of equals

    train_sizes, train_x, train_t = subset(~held, sizes, cand["x"], teacher_scores)
    weights = variants[chosen](train_x, train_t, train_sizes)
    # Only the order within a request counts; the intercept puts the scores at the teacher's mean level.
    folded = LinearRegression()
    folded.coef_ = weights.astype(np.float64)
    folded.intercept_ = float(train_t.mean() - (train_x.astype(np.float64) @ weights).mean())
    folded.n_features_in_ = len(features)
    # A fixed graph name (skl2onnx draws a uuid): the same data gives the same bytes, and version.
    onnx_model = convert_sklearn(folded, initial_types=[(INPUT, SklFloat([None, len(features)]))],
                                 target_opset=15, name="eaglerank-first-stage")

    # Judged as served: the exported model's float32 scores.
    test_sizes, test_x, test_t, test_p = subset(held, sizes, cand["x"], teacher_scores, cand["p_click"])
    exported = session(onnx_model.SerializeToString())
    first = predict(exported, INPUT, onnx_model.graph.output[0].name, test_x)
    record, table = cascade(first, test_t, test_p, test_sizes)
    print(table, file=sys.stderr)
    print(f"first stage: {chosen}, {time.perf_counter() - started:.1f} s from loading the candidates "
          "to the cascade report", file=sys.stderr)

    x = x[:, [names.index(n) for n in features]]
    write_model(args, schema, features, x, y, request, test, folded.predict(x[test]), onnx_model, live,
                "eaglerank-first-stage", {
        "algorithm": {
            "ridge": "Ridge regression on the teacher's score, score and features centred per request",
            "pairwise": f"Logistic regression on pairs (one of the teacher's top {FEED_TOP}, another "
                        "candidate of the request)",
        }[chosen] + "; one linear function on the teacher's features",
        "teacher": {"model": str(args.teacher), "name": teacher_meta.get("name"),
                    "version": teacher_meta.get("version")},
        "candidates": {
            "file": str(args.candidates),
            "requests": len(sizes),
            "rows": int(sizes.sum()),
            "training_requests": int((~held).sum()),
            "every": candidate_schema.get("every"),
        },
        "selection": {
            "validation_users": "crc32(user_id) % 5 == 1",
            f"recall@{SELECT_AT}": compared,
            "chosen": chosen,
        },
        "cascade": record,
    })


def refuse(source, e):
    print(f"train.py: refusing to train from {source}: {e}", file=sys.stderr)
    sys.exit(2)


def write_model(args, schema, names, x, y, request, test, scores, onnx_model, live, model_name, algorithm):
    model_name = args.model_name or model_name
    model_ndcg, groups = mean_ndcg(scores, y[test], request[test])
    popularity = x[test][:, names.index("item_trending")]
    pop_ndcg, _ = mean_ndcg(popularity, y[test], request[test])
    ctr_ndcg, _ = mean_ndcg(x[test][:, names.index("item_ctr")], y[test], request[test])
    rng = np.random.default_rng(SEED)
    random_ndcg, _ = mean_ndcg(rng.random(int(test.sum())), y[test], request[test])
    output_name = onnx_model.graph.output[0].name
    data = onnx_model.SerializeToString()

    sess = session(data)
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

    offline = {
        "ndcg@20_model": round(model_ndcg, 4),
        "ndcg@20_popularity": round(pop_ndcg, 4),
        "ndcg@20_ctr": round(ctr_ndcg, 4),
        "ndcg@20_random": round(random_ndcg, 4),
        "held_out_requests_with_clicks": groups,
    }
    data_facts = {
        "log": str(args.log),
        "tenant": schema.get("tenant"),
        "policy": schema.get("policy"),
        "requests": schema.get("requests"),
        "impressions": int(len(y)),
        "clicks": int((y > 0).sum()),
        "held_out_users": "crc32(user_id) % 5 == 0",
    }
    if live is not None:
        served_ndcg, served_groups = mean_ndcg(live["logged_score"][test], y[test], request[test])
        if served_groups < groups:
            print(f"ndcg@20_served: {groups - served_groups} of {groups} held-out requests with clicks "
                  "have no logged score and are left out of it", file=sys.stderr)
        # Same requests, same labels: the new model against the ranking that was served.
        offline = {"ndcg@20_model": offline.pop("ndcg@20_model"),
                   "ndcg@20_served": None if served_ndcg is None else round(served_ndcg, 4)} | offline
        offline["held_out_since"] = live["held_out_since"]
        counts = np.bincount(y, minlength=len(LIVE_LABELS))
        data_facts.pop("held_out_users")
        data_facts |= {
            "source": schema.get("source"),
            "since": schema.get("since"),
            "until": schema.get("until"),
            "rows": int(len(y)),
            "labels": {label: int(c) for label, c in zip(LIVE_LABELS, counts)},
            "join_window_seconds": schema.get("join_window_seconds"),
            "held_out": "last 20 % of requests by time",
        }

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
            "data": data_facts,
            "offline": offline,
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
    name = args.name or {"lgbm": "ranker", "linear": "ranker-linear", "first-stage": "ranker-first-stage"}[args.model]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.onnx").write_bytes(data)
    (args.out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["training"]["offline"] | {"inference_ms_per_500_rows": meta["training"]["inference_ms_per_500_rows"]}, indent=2))


if __name__ == "__main__":
    main()
