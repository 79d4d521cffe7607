"""DP-SGD for `mdc-jax train`: Poisson sampling, per-example clipping, Gaussian noise, accounting.

A step (Abadi et al. 2016, with the sampling the accountants analyse):

1. **Poisson sampling**: each of the ``n`` training examples (``Model.examples``, the privacy unit: for
   the language models, a sequence, one of the non-overlapping windows of the training text) joins the
   batch independently with probability ``q = batch_size / n``. The batch is padded to a fixed ``capacity`` (the
   ``1 − 1e-12`` quantile of Binomial(n, q)) and the padding rows get weight 0, so the step compiles
   once. Should a draw exceed the capacity (probability below 1e-12 per step) the excess examples
   are dropped from that step, which only lowers their sampling probability.
2. **Clipping** each example's gradient ``g_i`` to norm ``C``, summed: with ``train.grad: closed``
   by the model's closed form (:mod:`mdc_jax.per_example`, one backward pass), with ``autodiff`` by
   ``jax.vmap(jax.grad)`` of the model's loss on one example at a time (the baseline).
3. **Noise** ``N(0, σ²C²)`` added to the sum, divided by the *expected* batch size ``q·n``; the L2
   penalty's gradient (data-independent) is added unclipped and without noise.
4. **Accounting** with Google's ``dp-accounting``: the PLD accountant (or RDP) composes ``T`` steps of
   the Poisson-subsampled Gaussian mechanism and reports ε at the configured δ. Each accountant
   accounts for σ down to :data:`MIN_NOISE_MULTIPLIER` (checked when the config is loaded): the PLD
   accountant's privacy-loss grid grows without bound as σ shrinks (σ = 1e-6 would ask for petabytes),
   the RDP accountant's cost does not depend on σ and fails only where σ² underflows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..reference.per_example import clipped_from_batch_grads

CAPACITY_FAILURE = 1e-12

# The smallest σ (train.dp.noise_multiplier > 0) each accountant accounts for; the figures behind
# both are in docs/dp_sgd.md. PLD: its grid of privacy losses (spacing 1e-4) widens as σ falls, so
# one ε's memory and time grow without bound (σ = 1e-6 asks for 35.5 PiB). RDP: its cost does not
# depend on σ, and ε stays finite down to 1e-100 (at 1e-150 it overflows, at 1e-300 dp-accounting
# divides by zero). Noise this small gives no privacy anyway.
MIN_NOISE_MULTIPLIER = {"pld": 0.5, "rdp": 1e-100}


class AccountantOutOfMemory(MemoryError):
    """The accountant (dp-accounting, on the host) ran out of memory computing ε: not XLA, not the model."""


def noise_multiplier_problem(noise_multiplier: float, accountant: str) -> str | None:
    """Why ``accountant`` cannot account for σ = ``noise_multiplier`` (naming the config keys), or None."""
    floor = MIN_NOISE_MULTIPLIER.get(accountant)
    if floor is None or noise_multiplier == 0 or noise_multiplier >= floor:
        return None
    if accountant == "pld":
        return (f"train.dp.noise_multiplier {noise_multiplier:g} is below {floor:g}, the smallest σ the PLD accountant "
                f"(train.dp.accountant: pld) accounts for: its grid of privacy losses grows without bound as σ "
                f"shrinks. Use train.dp.accountant: rdp (any σ >= {MIN_NOISE_MULTIPLIER['rdp']:g}), a larger σ, "
                f"or 0 (clipping without noise, ε = inf)")
    return (f"train.dp.noise_multiplier {noise_multiplier:g} is below {floor:g}, the smallest σ the RDP accountant "
            f"(train.dp.accountant: rdp) computes with (σ² underflows); noise this small gives no privacy: use a "
            f"larger σ, or 0 (clipping without noise, ε = inf)")


def poisson_capacity(n: int, q: float) -> int:
    """The padded batch size: the ``1 − 1e-12`` quantile of the number of examples a step draws."""
    from scipy.stats import binom

    return int(min(n, max(1, binom.isf(CAPACITY_FAILURE, n, q) + 1)))


def poisson_batch(key, n: int, q: float, capacity: int):
    """``(indices, valid)``: the examples drawn with probability ``q`` each, padded to ``capacity``."""
    drawn = jax.random.bernoulli(key, q, (n,))
    (indices,) = jnp.nonzero(drawn, size=capacity, fill_value=0)
    valid = jnp.arange(capacity) < jnp.sum(drawn)
    return indices, valid


def epsilon(steps: int, q: float, noise_multiplier: float, delta: float, accountant: str = "pld") -> float:
    """ε after ``steps`` Poisson-subsampled Gaussian steps, at ``delta`` (``dp-accounting``)."""
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return float("inf")
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)
    acc = dp_accounting.pld.PLDAccountant() if accountant == "pld" else dp_accounting.rdp.RdpAccountant()
    try:
        return float(acc.compose(event).get_epsilon(delta))
    except MemoryError as err:  # the host ran out, inside dp-accounting: say so, not "reduce model sizes"
        raise AccountantOutOfMemory(
            f"the {accountant.upper()} accountant of dp-accounting (train.dp.accountant: {accountant}) ran out of "
            f"memory computing ε for σ = {noise_multiplier:g} over {steps} steps ({str(err).strip()[:100]}); "
            f"train.dp.accountant: rdp costs the same for any σ and number of steps") from None


def _one_example(batch, batch_axes, i):
    """Example ``i`` of a batch, as a batch of one (its sample axis kept)."""
    return jax.tree.map(lambda x, axis: jax.lax.dynamic_slice_in_dim(x, i, 1, axis=axis), batch, batch_axes)


def vmap_clipped_grad(loss, batch_axes, params, batch, weights, clip_norm):
    """``(loss, (1/B) Σ_i w_i min(1, C/‖g_i‖) g_i)`` by ``jax.vmap(jax.grad)`` of the model's loss on one
    example at a time: the autodiff baseline (``train.grad: autodiff``), clipped as the reference of
    :mod:`mdc_jax.per_example` clips. Here ``g_i`` includes the model's penalty gradient, if its loss
    has one."""
    B = weights.shape[0]
    one = lambda i: jax.value_and_grad(loss)(params, _one_example(batch, batch_axes, i))
    losses, grads = jax.vmap(one)(jnp.arange(B))
    return jnp.sum(weights * losses) / B, clipped_from_batch_grads(grads, clip_norm, weights)


def add_noise(grads, key, std):
    """``grads + N(0, std²)`` on every entry, one key per leaf."""
    leaves, tree = jax.tree.flatten(grads)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [g + std * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)])


def make_dp_grad(model, cfg, mesh=None):
    """``(params, key) -> (loss, noisy clipped grads)`` for the model under ``cfg.train.dp``, the sampling
    rate ``q`` and the padded batch size.

    ``mesh`` (a mesh with one axis ``"batch"``, several devices, perhaps across processes): the padded batch
    is split over its devices (its capacity rounded up to a multiple of them, the extra rows of weight 0);
    each device gathers and clips its own examples and the devices average their sums
    (:func:`jax.lax.pmean`). The draw and the noise come from the same key on every device, so the global
    batch and the noise, and with them ε, are those of one device."""
    dp, n, B = cfg.train.dp, model.examples, cfg.train.batch_size
    q = B / n
    devices = 1 if mesh is None else mesh.size
    capacity = -(-poisson_capacity(n, q) // devices) * devices
    if cfg.train.grad == "closed":
        clipped = model.clipped_grad
    else:
        clipped = functools.partial(vmap_clipped_grad, model.loss, model.batch_axes)

    def clipped_sum(params, indices, weights):  # (1/capacity) Σ_i w_i clip(g_i), over the examples at indices
        return clipped(params, model.gather(indices), weights, dp.clip_norm)

    if mesh is not None:
        local_sum = clipped_sum

        def clipped_sum(params, indices, weights):  # each device its share of the rows; the mean of equal shares
            spec = jax.sharding.PartitionSpec("batch")
            return jax.shard_map(lambda p, i, w: jax.lax.pmean(local_sum(p, i, w), "batch"), mesh=mesh,
                                 in_specs=(jax.sharding.PartitionSpec(), spec, spec),
                                 out_specs=jax.sharding.PartitionSpec())(params, indices, weights)

    def dp_grad(params, key):
        sample_key, noise_key = jax.random.split(key)
        indices, valid = poisson_batch(sample_key, n, q, capacity)
        weights = valid.astype(jax.tree.leaves(params)[0].dtype) * (capacity / B)  # (1/capacity) Σ w_i ... = Σ_drawn ... / (q n)
        loss, grads = clipped_sum(params, indices, weights)
        return loss, add_noise(grads, noise_key, dp.noise_multiplier * dp.clip_norm / B)

    return dp_grad, q, capacity
