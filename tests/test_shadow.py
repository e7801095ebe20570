"""Shadow models: the balanced IN/OUT design, batched training (masking isolates the shadows) and the
sequential fallback, on the embedded digits data."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmi.attacks.shadow import (
    ShadowSet,
    _BatchedTrainer,
    _ParallelModels,
    _StackedDense,
    sample_shadow_masks,
    train_shadows,
)
from tfmi.data import load_dataset
from tfmi.defenses.config import DefenseConfig
from tfmi.errors import TfmiError
from tfmi.models import build_model
from tfmi.training import TrainConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def pool(digits):
    return np.random.default_rng(0).permutation(len(digits))[:240]


@pytest.fixture(scope="module")
def batched_mlp(digits, pool) -> ShadowSet:
    return train_shadows(digits, pool, TrainConfig("mlp", epochs=12, batch_size=32), num_shadows=4,
                         seed=3, batched=True)


# --- the mask design ------------------------------------------------------------------------------

@pytest.mark.parametrize("n, k", [(1000, 16), (37, 4), (10, 2), (3000, 8)])
def test_masks_come_in_complementary_pairs_of_exact_halves(n, k):
    """Each record IN for exactly K/2 shadows, and every shadow on exactly half the pool: with the
    online pool (members and as many non-members) that is the target's own size, so a shadow ends its
    epochs on the batches the target ends on."""
    masks = sample_shadow_masks(n, k, seed=0)
    assert masks.shape == (k, n) and masks.dtype == bool
    assert np.all(masks.sum(axis=0) == k // 2)
    assert np.all(masks[0::2] ^ masks[1::2])  # shadow 2j+1 trains on what shadow 2j leaves out
    assert masks[0::2].sum(axis=1).tolist() == [n - n // 2] * (k // 2)
    assert masks[1::2].sum(axis=1).tolist() == [n // 2] * (k // 2)
    assert len({row.tobytes() for row in masks[0::2]}) == k // 2  # each pair splits anew


def test_masks_odd_k_and_single_shadow():
    masks = sample_shadow_masks(1001, 5, seed=2)
    assert set(masks.sum(axis=0).tolist()) <= {2, 3}
    assert masks.sum(axis=1).tolist() == [501, 500, 501, 500, 501]  # the fifth: a half of its own
    single = sample_shadow_masks(100, 1, seed=0)
    assert single.sum() == 50


def test_masks_are_seeded_and_random():
    a, b = sample_shadow_masks(500, 8, seed=7), sample_shadow_masks(500, 8, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample_shadow_masks(500, 8, seed=8))
    # every record's IN set is a random subset: each shadow is IN for about half of the records
    # and no two shadows share the same mask
    assert len({row.tobytes() for row in a}) == 8


# --- batched training ---------------------------------------------------------------------------

def test_batched_shadows_memorize_their_own_half(digits, pool, batched_mlp):
    shadows = batched_mlp
    assert shadows.batched and shadows.masks.shape == (4, len(pool))
    assert np.array_equal(shadows.pool, pool)
    logits = shadows.logits(digits.x[pool])
    assert logits.shape == (4, len(pool), 10)
    y = digits.y[pool]
    loss = -tf.nn.log_softmax(logits).numpy()[:, np.arange(len(pool)), y]
    for k, m in enumerate(shadows.masks):
        assert shadows.train_accuracy[k] >= shadows.test_accuracy[k]
        assert loss[k, m].mean() < 0.5 * loss[k, ~m].mean()  # own IN records fit much better
    assert shadows.train_accuracy.mean() > shadows.test_accuracy.mean()
    assert shadows.train_accuracy.min() > 0.95 and shadows.test_accuracy.min() > 0.7


def test_shadow_model_matches_stacked_logits(digits, batched_mlp):
    x = digits.x[:9]
    model = batched_mlp.shadow_model(2)
    assert isinstance(model, keras.Model)
    np.testing.assert_allclose(model(x, training=False).numpy(), batched_mlp.logits(x)[2], atol=1e-4)


def _stacked(digits, name, k=3):
    if name == "mlp":
        net = _StackedDense(build_model(name, digits.input_shape, digits.num_classes), list(range(k)))
        models = []
        for i in range(k):  # lone copies of each shadow
            models.append(build_model(name, digits.input_shape, digits.num_classes))
            models[-1].set_weights(net.shadow_weights(i))
        return net, models
    models = [build_model(name, digits.input_shape, digits.num_classes, seed=s) for s in range(k)]
    return _ParallelModels(models), models


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_zero_weight_shadow_does_not_move(digits, name):
    net, _ = _stacked(digits, name)
    trainer = _BatchedTrainer(net, TrainConfig(name, learning_rate=1e-2))
    before = [net.shadow_weights(k) for k in range(3)]
    x, y = np.stack([digits.x[:64]] * 3), np.stack([digits.y[:64]] * 3)
    w = np.ones((3, 64), np.float32)
    w[0] = 0.0  # shadow 0 has no IN records in this batch
    w[2, ::2] = 0.0
    for _ in range(2):  # fresh Adam moments: a zero gradient never moves the weights
        trainer.step(x, y, w)
    after = [net.shadow_weights(k) for k in range(3)]
    for b, a in zip(before[0], after[0], strict=True):
        np.testing.assert_array_equal(b, a)
    for k in (1, 2):
        assert any(not np.array_equal(b, a) for b, a in zip(before[k], after[k], strict=True))


def test_stacked_gradients_equal_each_shadow_alone(digits):
    """Shadow k's gradient in the joint loss is the gradient of a lone model on its IN records."""
    net, models = _stacked(digits, "mlp")
    rng = np.random.default_rng(0)
    x, y = digits.x[:50], digits.y[:50]
    w = (rng.random((3, 50)) < 0.5).astype(np.float32)
    with tf.GradientTape() as tape:
        # the trainer's loss, all shadows fed the same records with their own 0/1 weights
        logits = net(tf.constant(np.stack([x] * 3)), training=True, per_shadow=True)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(np.tile(y, (3, 1)), logits)
        loss = tf.reduce_sum(tf.reduce_sum(ce * w, axis=1) / w.sum(axis=1))
    joint = tape.gradient(loss, net.variables)
    ce_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for k, model in enumerate(models):
        inside = w[k] > 0
        with tf.GradientTape() as tape:
            alone_loss = ce_loss(y[inside], model(x[inside], training=True))
        alone = tape.gradient(alone_loss, model.trainable_variables)
        for g_joint, g_alone in zip(joint, alone, strict=True):
            np.testing.assert_allclose(g_joint[k].numpy(), g_alone.numpy(), rtol=1e-3, atol=1e-6)


def test_batched_and_sequential_agree(digits, pool, batched_mlp):
    config = TrainConfig("mlp", epochs=12, batch_size=32)
    sequential = train_shadows(digits, pool, config, num_shadows=4, seed=3, batched=False,
                               masks=batched_mlp.masks)
    assert not sequential.batched
    assert sequential.logits(digits.x[:5]).shape == (4, 5, 10)
    assert abs(sequential.train_accuracy.mean() - batched_mlp.train_accuracy.mean()) < 0.05
    assert abs(sequential.test_accuracy.mean() - batched_mlp.test_accuracy.mean()) < 0.08


def test_cnn_batched_and_defense_fallback(digits, pool):
    cnn = train_shadows(digits, pool[:120], TrainConfig("cnn", epochs=2, batch_size=32), num_shadows=2)
    assert cnn.batched and cnn.logits(digits.x[:3]).shape == (2, 3, 10)
    l2 = train_shadows(digits, pool[:120], TrainConfig("mlp", epochs=1), num_shadows=2,
                       defense=DefenseConfig("l2"))
    assert not l2.batched and l2.logits(digits.x[:3]).shape == (2, 3, 10)
    assert np.all((0 <= l2.train_accuracy) & (l2.train_accuracy <= 1))


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pool, kwargs, match", [
    (np.arange(10), {"num_shadows": 0}, "number of shadows"),
    (np.arange(10), {"num_shadows": 2.5}, "number of shadows"),
    (np.array([0]), {}, "at least 2"),
    (np.array([0, 5000]), {}, "pool indices"),
    (np.array([-1, 3]), {}, "pool indices"),
    (np.array([1, 2, 2]), {}, "repeats"),
    (np.zeros((2, 2), int), {}, "1-D"),
    (np.array([0.0, 1.0]), {}, "integer"),
    (np.arange(10), {"batched": True, "defense": DefenseConfig("dp-sgd")}, "batched=False"),
    (np.arange(10), {"num_shadows": 2, "masks": np.ones((3, 10), bool)}, "shape"),
    (np.arange(4), {"num_shadows": 2, "masks": np.array([[1, 1, 0, 0], [0] * 4], bool)}, "no IN"),
])
def test_bad_inputs_raise(digits, pool, kwargs, match):
    with pytest.raises(TfmiError, match=match):
        train_shadows(digits, pool, TrainConfig("mlp", epochs=1), **kwargs)


def test_bad_mask_arguments_raise():
    with pytest.raises(TfmiError, match="number of records"):
        sample_shadow_masks(0, 4)
    with pytest.raises(TfmiError, match="number of shadows"):
        sample_shadow_masks(10, True)


def test_select_refuses_bad_indices_and_batched_shadows(digits, pool, batched_mlp):
    with pytest.raises(TfmiError, match="cannot be taken apart"):
        batched_mlp.select([0, 1])
    sequential = train_shadows(digits, pool[:60], TrainConfig("mlp", epochs=1), num_shadows=2, batched=False)
    for bad in ([], [0, 0], [2], [-1]):
        with pytest.raises(TfmiError, match="select distinct shadows"):
            sequential.select(bad)
    assert sequential.select([1]).masks.tolist() == sequential.masks[[1]].tolist()


def test_bad_shadow_index_raises(batched_mlp):
    with pytest.raises(TfmiError, match="out of range"):
        batched_mlp.shadow_model(4)


def test_each_epoch_feeds_every_shadow_its_own_records_once(digits):
    """The batch schedule: per epoch each shadow sees each IN record once and no OUT record."""
    net, _ = _stacked(digits, "mlp", k=5)
    trainer = _BatchedTrainer(net, TrainConfig("mlp"))
    masks = sample_shadow_masks(101, 5, seed=4)
    seen = []
    trainer.step = lambda x, y, w: seen.append((y.copy(), w.copy()))
    trainer.fit(np.zeros((101, 1)), np.arange(101), masks, epochs=2, batch_size=8,
                rng=np.random.default_rng(0))
    steps = -(-masks.sum(axis=1).max() // 8)
    assert len(seen) == 2 * steps
    for epoch in (seen[:steps], seen[steps:]):
        for k in range(5):
            fed = np.concatenate([y[k][w[k] > 0] for y, w in epoch])
            assert np.array_equal(np.sort(fed), np.flatnonzero(masks[k]))
            assert all(w[k].sum() > 0 for _, w in epoch)  # never an empty step


# ------------------------------------------------------------------------------- failed shadows


def _collapsed(model: keras.Model) -> keras.Model:
    """The model with its last layer made to predict class 0 for every input: a diverged training."""
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    bias = np.zeros_like(bias)
    bias[0] = 1e4
    last.set_weights([np.zeros_like(kernel), bias])
    return model


@pytest.fixture()
def failing_first_attempt(monkeypatch):
    """Shadow 1's first training (and, with ``always``, every training) fails."""
    import tfmi.attacks.shadow as shadow_module

    real, calls = shadow_module._train_one_shadow, []
    state = {"fail_seed": None, "always": False, "fail_seeds": ()}

    def train_one(data, inside, outside, config, defense, seed):
        calls.append(seed)
        model = real(data, inside, outside, config, defense, seed)
        failed = state["always"] or seed == state["fail_seed"] or seed in state["fail_seeds"]
        return _collapsed(model) if failed else model

    monkeypatch.setattr(shadow_module, "_train_one_shadow", train_one)
    return state, calls


def test_a_shadow_whose_training_failed_is_retrained_with_a_new_seed(digits, pool, failing_first_attempt):
    from tfmi.attacks.shadow import _shadow_seeds

    state, calls = failing_first_attempt
    config = TrainConfig("mlp", epochs=3, batch_size=32)
    state["fail_seed"] = _shadow_seeds(5, 3)[1]
    kept = train_shadows(digits, pool, config, num_shadows=3, seed=5, batched=False)
    assert kept.retrained.tolist() == [0, 0, 0] and kept.train_accuracy[1] < 0.2  # kept as it failed
    calls.clear()
    redone = train_shadows(digits, pool, config, num_shadows=3, seed=5, batched=False, retrain_failed=True)
    assert redone.retrained.tolist() == [0, 1, 0]
    assert len(calls) == 4 and calls[2] not in calls[:2]  # one more training, with a seed of its own
    assert redone.train_accuracy.min() > 0.5
    from tfmi.attacks.suite import run_attacks

    members = pool[:60]
    report = run_attacks(redone.shadow_model(0), digits, members, np.setdiff1d(pool, members)[:60],
                         attacks="loss", shadows=redone)
    note = next(note for note in report.notes if note.startswith("1 of 3 shadows failed to train"))
    assert "still failed" not in note  # its retraining worked
    assert np.array_equal(redone.masks, kept.masks)  # the design is unchanged: same IN records
    logits = redone.logits(digits.x[pool])
    assert np.array_equal(logits[0], kept.logits(digits.x[pool])[0])  # healthy shadows are untouched


def test_a_failed_batched_shadow_is_retrained_on_its_own(digits, pool, monkeypatch):
    """Batched shadows train as one network; one that diverged is taken out and trained again alone."""
    import tfmi.attacks.shadow as shadow_module

    real_fit = shadow_module._BatchedTrainer.fit

    def fit_then_collapse_shadow_1(self, *args, **kwargs):
        real_fit(self, *args, **kwargs)
        kernel, bias = self.network.kernels[-1], self.network.biases[-1]
        kernel.assign(tf.tensor_scatter_nd_update(kernel, [[1]], tf.zeros_like(kernel[1:2])))
        collapsed = np.zeros(bias.shape[1], np.float32)
        collapsed[0] = 1e4  # shadow 1 now predicts class 0 for every input
        bias.assign(tf.tensor_scatter_nd_update(bias, [[1]], collapsed[None]))

    monkeypatch.setattr(shadow_module._BatchedTrainer, "fit", fit_then_collapse_shadow_1)
    config = TrainConfig("mlp", epochs=3, batch_size=32)
    kept = train_shadows(digits, pool, config, num_shadows=3, seed=5)
    assert kept._network is not None and kept.retrained.tolist() == [0, 0, 0]
    assert kept.train_accuracy[1] < 0.2
    redone = train_shadows(digits, pool, config, num_shadows=3, seed=5, retrain_failed=True)
    assert redone.batched and redone.retrained.tolist() == [0, 1, 0]
    assert redone.train_accuracy.min() > 0.5
    before, after = kept.logits(digits.x[pool]), redone.logits(digits.x[pool])
    np.testing.assert_allclose(after[[0, 2]], before[[0, 2]], rtol=1e-4, atol=1e-4)  # healthy ones kept
    assert redone.select([0, 1]).num_shadows == 2  # held as Keras models now: the set can be taken apart
    monkeypatch.setattr(shadow_module._BatchedTrainer, "fit", real_fit)
    healthy = train_shadows(digits, pool, config, num_shadows=3, seed=5, retrain_failed=True)
    assert healthy._network is not None and healthy.retrained.tolist() == [0, 0, 0]  # none failed: batched


def test_retraining_stops_after_a_bounded_number_of_attempts(digits, pool, failing_first_attempt):
    from tfmi.attacks.shadow import MAX_RETRAINS

    state, calls = failing_first_attempt
    state["always"] = True
    shadows = train_shadows(digits, pool[:120], TrainConfig("cnn", epochs=1), num_shadows=1, seed=0,
                            batched=False, retrain_failed=True)
    assert shadows.retrained.tolist() == [MAX_RETRAINS]
    assert len(calls) == MAX_RETRAINS + 1 and len(set(calls)) == len(calls)  # a new seed each time
    from tfmi.attacks.suite import run_attacks

    report = run_attacks(shadows.shadow_model(0), digits, pool[:60], pool[60:120], attacks="loss",
                         shadows=shadows)
    note = next(note for note in report.notes if f"1 still failed after {MAX_RETRAINS} retrainings" in note)
    assert "kept" in note and report.shadows_left_out == []  # alone, it is all the attacker has


def test_a_shadow_that_failed_every_retraining_is_left_out_of_the_attacks(digits, pool,
                                                                          failing_first_attempt):
    """An attacker fits LiRA to the shadows that trained: the result is that of the 3 healthy shadows."""
    from tfmi.attacks.shadow import MAX_RETRAINS, _retry_seed, _shadow_seeds
    from tfmi.attacks.suite import run_attacks

    state, _ = failing_first_attempt
    first = _shadow_seeds(4, 4)[1]
    state["fail_seeds"] = {first, *(_retry_seed(first, a) for a in range(1, MAX_RETRAINS + 1))}
    shadows = train_shadows(digits, pool, TrainConfig("mlp", epochs=3, batch_size=32), num_shadows=4, seed=4,
                            batched=False, retrain_failed=True)
    assert shadows.retrained.tolist() == [0, MAX_RETRAINS, 0, 0] and shadows.train_accuracy[1] < 0.2
    members, non_members = pool[:120], pool[120:]
    kwargs = {"attacks": ["loss", "lira_online"], "oracle": False}
    target = shadows.shadow_model(0)
    report = run_attacks(target, digits, members, non_members, shadows=shadows, **kwargs)
    assert report.shadows_left_out == [1] and report.num_shadows == 3
    assert any("left out of the shadow-based attacks (3 used)" in note for note in report.notes)
    healthy = shadows.select([0, 2, 3])
    healthy.retrained = np.zeros(3, np.int64)
    alone = run_attacks(target, digits, members, non_members, shadows=healthy, **kwargs)
    for name in ("loss", "LiRA online, fixed variance"):
        assert report.result(name).auc == alone.result(name).auc
    assert report.shadow_train_accuracy == pytest.approx(float(np.mean(shadows.train_accuracy[[0, 2, 3]])))


def test_chunks_trained_elsewhere_bring_their_retraining_counts_back(digits, pool, tmp_path,
                                                                    failing_first_attempt):
    from tfmi.attacks.shadow import _shadow_seeds
    from tfmi.executors import LocalExecutor
    from tfmi.shadow_chunks import ShadowChunkStore, train_shadows_on

    state, _ = failing_first_attempt
    state["fail_seed"] = _shadow_seeds(2, 2)[1]
    config, defense = TrainConfig("mlp", epochs=2, batch_size=32), DefenseConfig("l2")
    queries = digits.x[pool]
    store = ShadowChunkStore(tmp_path, digits, pool, config, queries, num_shadows=2, seed=2, per_task=1,
                             defense=defense, retrain_failed=True)
    shadows = train_shadows_on(LocalExecutor(), digits, pool, config, queries, num_shadows=2, seed=2,
                               per_task=1, defense=defense, store=store, retrain_failed=True)
    assert shadows.retrained.tolist() == [0, 1]
    assert store.load((1, 2)).retrained.tolist() == [1]  # saved with the chunk, read back without pickle
    plain = ShadowChunkStore(tmp_path, digits, pool, config, queries, num_shadows=2, seed=2, per_task=1,
                             defense=defense)
    assert plain.key != store.key  # chunks trained without retraining are cached apart
