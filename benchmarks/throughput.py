"""Seconds per training epoch, side by side: the published code, the series' training path, and the floor.

    python benchmarks/throughput.py --ways reference-tf train-jax floor-jax --rounds 2   # the README's figures
    python benchmarks/throughput.py --repeats 1 --samples 4500   # a fast smoke run

Each way runs in its own process (Keras fixes its backend at import), one after the
other, never two at once, on the same synthetic CIFAR-shaped data (45,000 samples,
batch 32, as in the exercise). Per way: one warm-up epoch (compilation), then the
median of ``--repeats`` timed epochs. Ratios are throughput against the reference way.

Ways:
  reference-tf   Sequential + compile + fit on NumPy arrays, TensorFlow (the published solution)
  reference-jax  the same code under KERAS_BACKEND=jax
  train-tf       an epoch as helpers.training.train runs it: fit, compiled by compile_model (XLA,
                 32 steps per call), on callbacks.EpochOrder's batches, TensorFlow
  train-jax      the same under JAX: what every notebook runs
  fit32-jax      the reference code under JAX with compile(steps_per_execution=32), on NumPy
                 arrays: what EpochOrder's batches cost against fit's own
  floor-jax      the same network and update written directly in JAX, no framework, one
                 lax.scan per epoch: a lower bound for this batch size on this machine (Adam, not
                 Nadam); it lives here only, as the floor the training path is measured against
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

WAYS = ("reference-tf", "train-tf", "reference-jax", "train-jax", "fit32-jax", "floor-jax")
MODELS = ("baseline", "bn")


def synthetic(n, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return x, y


def reference_epoch_fn(model_name, x, y, batch_size, steps_per_execution=1):
    """The published solution's way: Sequential, compile, fit on NumPy arrays."""
    import keras

    keras.utils.set_random_seed(42)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten()])
    if model_name == "bn":
        model.add(keras.layers.BatchNormalization())
    for _ in range(20):
        if model_name == "bn":
            model.add(keras.layers.Dense(100, kernel_initializer="he_normal"))
            model.add(keras.layers.BatchNormalization())
            model.add(keras.layers.Activation("swish"))
        else:
            model.add(keras.layers.Dense(100, activation="swish", kernel_initializer="he_normal"))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Nadam(learning_rate=5e-5),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return lambda: model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)


def train_epoch_fn(model_name, x, y, batch_size):
    """An epoch as ``helpers.training.train`` runs it: fit on ``EpochOrder``'s batches, compile_model's speed-ups."""
    from helpers import callbacks, models, training

    model = training.compile_model(models.build_dnn(batch_norm=model_name == "bn"), 5e-5)
    batches = callbacks.EpochOrder(x, y, batch_size, seed=0)
    return lambda: model.fit(batches, epochs=1, shuffle=False, verbose=0)


def floor_epoch_fn(model_name, x, y, batch_size):
    """Pure JAX: the same layers and an Adam update inside one lax.scan per epoch."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    sizes = [32 * 32 * 3] + [100] * 20 + [10]
    key = jax.random.PRNGKey(0)
    params = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        layer = {"w": jax.random.normal(sub, (fan_in, fan_out)) * jnp.sqrt(2.0 / fan_in)}
        if model_name == "bn" and i < 20:
            layer.update(gamma=jnp.ones(fan_out), beta=jnp.zeros(fan_out))
        else:
            layer["b"] = jnp.zeros(fan_out)
        params.append(layer)
    stats = [{"mean": jnp.zeros(n), "var": jnp.ones(n)} for n in sizes[1:-1]] if model_name == "bn" else []

    def forward(params, stats, xb):
        h = xb.reshape(xb.shape[0], -1)
        new_stats = []
        for i, layer in enumerate(params):
            z = h @ layer["w"]
            if i == len(params) - 1:
                return z + layer["b"], new_stats
            if model_name == "bn":
                mean, var = z.mean(0), z.var(0)
                z = (z - mean) / jnp.sqrt(var + 1e-3) * layer["gamma"] + layer["beta"]
                new_stats.append({"mean": 0.99 * stats[i]["mean"] + 0.01 * mean,
                                  "var": 0.99 * stats[i]["var"] + 0.01 * var})
            else:
                z = z + layer["b"]
            h = jax.nn.swish(z)

    def loss_fn(params, stats, xb, yb):
        logits, new_stats = forward(params, stats, xb)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(yb.shape[0]), yb]), new_stats

    def step(carry, idx):
        params, stats, m, v, t = carry
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, xs[idx], ys[idx])
        t = t + 1
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        lr = 5e-5 * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        params = jax.tree.map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + 1e-7), params, m, v)
        return (params, stats, m, v, t), loss

    xs, ys = jnp.asarray(x), jnp.asarray(y)
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = [(params, stats, zeros, zeros, 0.0)]
    run = jax.jit(lambda carry, idx: jax.lax.scan(step, carry, idx))
    rng = np.random.default_rng(0)

    def epoch():
        n_full = len(y) // batch_size
        idx = rng.permutation(len(y))[: n_full * batch_size].reshape(n_full, batch_size)
        state[0], losses = run(state[0], jnp.asarray(idx))
        return float(losses.mean())  # blocks until the epoch is done

    return epoch


def measure_one(way, model_name, samples, batch_size, repeats):
    x, y = synthetic(samples)
    make = {"reference": reference_epoch_fn, "train": train_epoch_fn, "floor": floor_epoch_fn,
            "fit32": lambda *a: reference_epoch_fn(*a, steps_per_execution=32)}[way.split("-")[0]]
    epoch = make(model_name, x, y, batch_size)
    start = time.perf_counter()
    epoch()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    import keras

    backend = keras.backend.backend()
    return {"way": way, "model": model_name, "backend": backend,
            "versions": {"keras": keras.__version__, backend: __import__(backend).__version__},
            "warmup_s": warmup, "epoch_s": times, "median_s": statistics.median(times)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=45_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--rounds", type=int, default=1, help="run the ways in turn this many times")
    parser.add_argument("--one", nargs=2, metavar=("WAY", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(measure_one(*args.one, args.samples, args.batch_size, args.repeats)))
        return 0

    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores; {args.samples} samples, "
          f"batch {args.batch_size}, median of {args.repeats} epochs after a warm-up epoch", flush=True)
    rows = []
    for model_name, _, way in ((m, r, w) for m in args.models for r in range(args.rounds) for w in args.ways):
        env = {**os.environ, "KERAS_BACKEND": way.split("-")[1].replace("tf", "tensorflow"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        cmd = [sys.executable, __file__, "--one", way, model_name, "--samples", str(args.samples),
               "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {model_name:8s} {way:14s} {row['median_s']:6.2f} s/epoch  (warm-up {row['warmup_s']:.1f} s; "
              f"epochs {', '.join(f'{t:.2f}' for t in row['epoch_s'])})", flush=True)
    print()
    base = "reference-tf" if "reference-tf" in args.ways else args.ways[0]
    print(f"{'model':8s} {'way':14s} {'s/epoch':>8s} {'speed-up vs ' + base:>26s}")
    for model_name in args.models:
        medians = {w: statistics.median(r["median_s"] for r in rows if r["model"] == model_name and r["way"] == w)
                   for w in args.ways}
        for w, seconds in medians.items():
            print(f"{model_name:8s} {w:14s} {seconds:8.2f} {medians[base] / seconds:>25.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.system()} {platform.machine()}",
                       "cpu_cores": os.cpu_count(), "python": platform.python_version(),
                       "samples": args.samples, "batch_size": args.batch_size,
                       "repeats": args.repeats, "rounds": args.rounds, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
