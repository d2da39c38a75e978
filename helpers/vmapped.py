"""Several networks of one architecture in one compiled step (JAX): the GPU way.

Called through ``helpers.parallel.train_many(..., method="vmap")``. Each network keeps
its own weights, optimizer state (its learning rate included), seed and batch order;
``jax.vmap`` maps ``helpers.engine``'s train step over the stacked states, inside one
``lax.scan`` per epoch, so a GPU runs K small networks for about the price of one. On a
CPU it gains nothing (the networks' work simply adds up), but it runs, which is how the
tests check it.

Early stopping is per network: each has its own ``training.EarlyStopping``; once one
stops, a mask keeps its state unchanged for the rest of the call, and it gets its best
weights back at the end, as training alone would.
"""
from __future__ import annotations

import time

import numpy as np

from helpers import config, engine, training


def _stack(trees):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def train_side_by_side(build_model, data, runs, *, verbose=1, compile_model=None, settings=None,
                       max_epochs=None, patience=None, batch_size=None, evaluate_test=True, shuffle=True,
                       extra_config=None):
    """Train ``runs`` (``helpers.parallel.Run``) side by side; (records, failures, weights) as ``train_many``."""
    import jax
    import jax.numpy as jnp
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError("method='vmap' needs KERAS_BACKEND=jax")
    settings = settings or config.SETTINGS
    max_epochs, patience, batch_size = training.resolve_lengths(settings, max_epochs, patience, batch_size)
    compile_fn = compile_model or training.compile_model
    nets = [compile_fn(build_model(r.seed, **r.options), r.learning_rate) for r in runs]
    for m in nets:
        engine.prepare_fast_path(m)
    signatures = {engine._signature(m) for m in nets}
    if len(signatures) > 1:
        raise ValueError("method='vmap' needs networks that differ only in weights, seed and float learning "
                         "rate (one architecture, one optimizer setting, one schedule)")
    template = nets[0]
    train_scan, eval_scan = engine.step_functions(template)
    k = len(nets)

    def state_of(m):
        return ([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
                [v.value for v in m.optimizer.variables])

    def masked_epoch(state, active, x_all, y_all, idx):  # idx: (K, steps, batch)
        def one(s, i):
            return train_scan(s, x_all, y_all, i)

        new_state, out = jax.vmap(one)(state, idx)

        def keep(new, old):
            return jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

        return jax.tree_util.tree_map(keep, new_state, state), out

    epoch_fn = jax.jit(masked_epoch)
    eval_fn = jax.jit(jax.vmap(eval_scan, in_axes=(0, 0, None, None, None)))
    state = _stack([state_of(m) for m in nets])
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    xv, yv = jnp.asarray(data.x_valid), jnp.asarray(data.y_valid)
    n = len(data.y_train)
    progress = [training.EarlyStopping(patience) for _ in runs]
    width = max(len(r.variant) for r in runs)

    def weights_of(i, state):
        """Network i's weights in ``model.get_weights()`` order."""
        m = nets[i]
        by_id = {id(v): a[i] for v, a in zip(m.trainable_variables, state[0])}
        by_id.update({id(v): a[i] for v, a in zip(m.non_trainable_variables, state[1])})
        return [np.asarray(by_id[id(v)]) for v in m.weights]

    for epoch in range(1, max_epochs + 1):
        active = np.array([p.stopped is None for p in progress])
        if not active.any():
            break
        start = time.perf_counter()
        orders = [engine.batch_indices(n, batch_size, np.random.default_rng((r.seed, epoch)) if shuffle else None)
                  for r in runs]
        losses, corrects, sizes = [], [], []
        for part in (0, 1):
            idx = np.stack([o[part] if part == 0 else o[part].reshape(1, -1) for o in orders])
            if idx.size:
                state, (loss, correct) = epoch_fn(state, jnp.asarray(active), x, y, jnp.asarray(idx))
                losses.append(np.asarray(loss))
                corrects.append(np.asarray(correct))
                sizes.append(np.full(idx.shape[1], idx.shape[2]))
        loss, correct, size = (np.concatenate(p, axis=-1) if p[0].ndim > 1 else np.concatenate(p)
                               for p in (losses, corrects, sizes))
        train_loss = (loss * size).sum(axis=1) / size.sum()
        train_acc = correct.sum(axis=1) / size.sum()
        full, rest = engine.batch_indices(len(yv), engine.EVAL_BATCH_SIZE, None)
        val_loss_sum, val_correct = 0.0, 0.0
        for idx in (full, rest.reshape(1, -1)):
            if idx.size:
                l, c = eval_fn(state[0], state[1], xv, yv, jnp.asarray(idx))
                val_loss_sum = val_loss_sum + np.asarray(l).sum(axis=1)
                val_correct = val_correct + np.asarray(c).sum(axis=1)
        val_loss, val_acc = val_loss_sum / len(yv), val_correct / len(yv)
        seconds = time.perf_counter() - start
        for i, (run, p) in enumerate(zip(runs, progress)):
            if not active[i]:
                continue
            improved = p.update(train_loss[i], train_acc[i], val_loss[i], val_acc[i], seconds,
                                lambda i=i: weights_of(i, state))
            if verbose:
                line = training.format_epoch(p, max_epochs, improved)
                print("\n".join(f"[{run.variant.ljust(width)}] {part}" for part in line.split("\n")), flush=True)
    records = []
    final = state
    for i, (run, m, p) in enumerate(zip(runs, nets, progress)):
        for v, a in zip(m.trainable_variables, final[0]):
            v.assign(a[i])
        for v, a in zip(m.non_trainable_variables, final[1]):
            v.assign(a[i])
        for v, a in zip(m.optimizer.variables, final[2]):
            v.assign(a[i])
        record = training.finish(m, data, run.variant, p, settings, engine.JaxStepper(m), seed=run.seed,
                                 batch_size=batch_size, max_epochs=max_epochs, evaluate_test=evaluate_test,
                                 verbose=0, extra_config={"trained": f"side by side (vmap) with {k} networks",
                                                          **(extra_config or {})})
        if verbose:
            print(f"[{run.variant.ljust(width)}] {run.variant}: best epoch {record.best_epoch} of {record.epochs} "
                  f"({record.stopped}); valid acc {record.valid_accuracy:.4f}, test acc {record.test_accuracy:.4f}",
                  flush=True)
        records.append(record)
    return records, {}, {r.variant: m.get_weights() for r, m in zip(records, nets)}
