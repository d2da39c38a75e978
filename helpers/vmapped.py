"""Several networks in one compiled step (JAX): the GPU way of ``parallel.train_many``.

Called through ``helpers.parallel.train_many(..., method="vmap")``. Each network keeps
its own weights, optimizer state (its learning rate included), seed, batch order and
flips; ``jax.vmap`` maps ``helpers.engine``'s train step over the stacked states, inside
one ``lax.scan`` per epoch, so a GPU runs K small networks for about the price of one.
On a CPU it gains nothing (the networks' work simply adds up), but it runs, which is how
the tests check it.

The epoch loop is ``training.train_networks``, the one ``training.train`` runs: early
stopping, checkpoints (one per network: a killed run resumes), TensorBoard logs and
records are per network. A stopped network is masked: its state stops changing while
the others go on, and it gets its best weights back at the end, as training alone would.
Networks that cannot share one compiled step (another architecture, another optimizer
setting or schedule) are trained in groups that can, one group after another.
"""
from __future__ import annotations

import numpy as np

from helpers import checkpoints, engine, training


class SideBySide:
    """K compiled networks of one signature (``engine.signature``), trained as one, for ``train_networks``."""

    def __init__(self, models):
        import jax
        import jax.numpy as jnp

        if len({engine.signature(m) for m in models}) != 1:
            raise ValueError("networks side by side must share one compiled step: one architecture, one "
                             "optimizer setting, one schedule (group them with parallel.train_many)")
        self.models = list(models)
        for m in self.models:
            engine.prepare_fast_path(m)
        self._jnp = jnp
        train_scan, eval_scan = engine.step_functions(self.models[0])

        def masked_epoch(state, active, x_all, y_all, idx, flips):  # idx: (K, steps, batch)
            new_state, out = jax.vmap(lambda s, i, f: train_scan(s, x_all, y_all, i, f))(state, idx, flips)

            def keep(new, old):
                return jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

            return jax.tree_util.tree_map(keep, new_state, state), out

        self._epoch = jax.jit(masked_epoch)
        self._eval = jax.jit(jax.vmap(eval_scan, in_axes=(0, 0, None, None, None)))
        self.state = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[self._state_of(m) for m in self.models])

    @staticmethod
    def _state_of(m):
        return ([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
                [v.value for v in m.optimizer.variables])

    def _lists(self, i):
        """Network i's variables and its slices of the stacked state, list by list."""
        m = self.models[i]
        return zip((m.trainable_variables, m.non_trainable_variables, m.optimizer.variables), self.state)

    def device_arrays(self, x, y):
        return self._jnp.asarray(x), self._jnp.asarray(y)

    def train_epoch(self, x, y, batch_size, seeds, flips, active):
        jnp = self._jnp
        orders = [engine.split_batches(engine.epoch_order(len(y), s), batch_size) for s in seeds]
        if all(f is None for f in flips):
            flips = None  # no flips at all: the step skips them
        else:
            flips = jnp.asarray(np.stack([np.zeros(len(y), bool) if f is None else f for f in flips]))
        losses, corrects, sizes = [], [], []
        for part in (0, 1):  # the full batches, then the rest
            idx = np.stack([o[0] if part == 0 else o[1].reshape(1, -1) for o in orders])
            if idx.size:
                self.state, (loss, correct) = self._epoch(self.state, jnp.asarray(active), x, y, jnp.asarray(idx),
                                                          flips)
                losses.append(np.asarray(loss))
                corrects.append(np.asarray(correct))
                sizes.append(np.full(idx.shape[1], idx.shape[2]))
        loss, correct, size = (np.concatenate(p, axis=-1) for p in (losses, corrects, [s[None] for s in sizes]))
        return (loss * size).sum(axis=1) / size.sum(), correct.sum(axis=1) / size.sum()

    def evaluate(self, x, y):
        full, rest = engine.batch_indices(len(y), engine.EVAL_BATCH_SIZE, None)
        loss_sum, correct = 0.0, 0.0
        for idx in (full, rest.reshape(1, -1)):
            if idx.size:
                losses, corrects = self._eval(self.state[0], self.state[1], x, y, self._jnp.asarray(idx))
                loss_sum = loss_sum + np.asarray(losses).sum(axis=1)
                correct = correct + np.asarray(corrects).sum(axis=1)
        return loss_sum / len(y), correct / len(y)

    def variables(self, i):
        """Network i's variables by path (``checkpoints.variables_of``), from the stacked state."""
        m, out = self.models[i], {}
        by_id = {id(v): a[i] for variables, stacked in self._lists(i) for v, a in zip(variables, stacked)}
        for prefix, variables in (("model", m.variables), ("optimizer", m.optimizer.variables)):
            for v in variables:
                out[f"{prefix}/{v.path}"] = np.asarray(by_id[id(v)]) if id(v) in by_id else np.asarray(v.value)
        return out

    def load(self, i, values):
        """Network i's variables from a checkpoint (``values`` by path), into its model and its slice of the state."""
        checkpoints.assign(self.models[i], values)
        self.state = tuple([a.at[i].set(v.value) for v, a in zip(variables, stacked)]
                           for variables, stacked in self._lists(i))

    def weights(self, i):
        by_id = {id(v): a[i] for variables, stacked in self._lists(i) for v, a in zip(variables, stacked)}
        return {w.path: np.asarray(by_id[id(w)]) for w in self.models[i].weights}

    def finished_model(self, i):
        """Network i with its last state written back, and a stepper to evaluate it."""
        for variables, stacked in self._lists(i):
            for v, a in zip(variables, stacked):
                v.assign(a[i])
        return self.models[i], engine.JaxStepper(self.models[i])


def groups_of(models) -> list[list[int]]:
    """Indices of the networks, grouped by compiled step (``engine.signature``), in order of first appearance."""
    groups = {}
    for i, m in enumerate(models):
        groups.setdefault(engine.signature(m), []).append(i)
    return list(groups.values())


def train_side_by_side(build_model, data, runs, *, compile_model=None, report=None, extra_config=None,
                       **train_kwargs):
    """Train ``runs`` (``parallel.Run``) side by side, a group per compiled step; (records, weights).

    ``train_kwargs``: every keyword ``training.train`` takes, with the same meaning.
    """
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError("method='vmap' needs KERAS_BACKEND=jax (vmap is a JAX transformation); "
                         "use method='processes' under other backends")
    compile_fn = compile_model or training.compile_model
    records, weights = {}, {}
    models = [compile_fn(build_model(r.seed, **r.options), r.learning_rate) for r in runs]
    groups = groups_of(models)
    for group in groups:
        members = [runs[i] for i in group]
        note = {"trained": f"side by side (vmap) with {len(group)} networks"
                           + (f", group {groups.index(group) + 1} of {len(groups)}" if len(groups) > 1 else "")}
        networks = SideBySide([models[i] for i in group])
        done = training.train_networks(networks, data, [(r.variant, r.seed) for r in members], report=report,
                                       extra_config={**note, **(extra_config or {})}, **train_kwargs)
        for i, run, record in zip(group, members, done):
            if run.options:
                record.config["build_options"] = dict(run.options)
            records[run.variant] = record
            weights[run.variant] = models[i].get_weights()
    return [records[r.variant] for r in runs], weights
