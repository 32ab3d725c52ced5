"""Training: loss goes down, masks hold, gradients match finite differences."""
import numpy as np
import pytest

from sparsify import Dense, Network
from sparsify import train as T


def blobs(n=120, d=5, k=3, seed=0):
    """k well-separated Gaussian blobs (linearly separable)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 6
    y = np.arange(n) % k
    X = centres[y] + rng.standard_normal((n, d))
    return X, y


def test_training_reduces_loss_and_fits_separable_data():
    X, y = blobs()
    net = T.init_mlp([5, 16, 3], rng=0)
    before = T.cross_entropy(net, X, y)
    losses = []
    trained = T.train(net, X, y, epochs=20, batch_size=16, lr=0.05, rng=0,
                      on_epoch=lambda e, l: losses.append(l))
    after = T.cross_entropy(trained, X, y)
    assert after < 0.2 * before, (before, after)
    assert losses[-1] < losses[0]
    assert len(losses) == 20
    assert T.accuracy(trained, X, y) == 1.0
    # the input network is untouched (networks are immutable)
    np.testing.assert_array_equal(net.weights[0], T.init_mlp([5, 16, 3], rng=0).weights[0])


def test_training_is_reproducible_for_a_seed_and_differs_across_seeds():
    X, y = blobs()
    net = T.init_mlp([5, 8, 3], rng=1)
    a = T.train(net, X, y, epochs=2, rng=3)
    b = T.train(net, X, y, epochs=2, rng=3)
    c = T.train(net, X, y, epochs=2, rng=4)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.weights[0], c.weights[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_masked_weights_stay_exactly_zero(dtype):
    X, y = blobs()
    net = T.init_mlp([5, 16, 3], rng=0, dtype=dtype)
    rng = np.random.default_rng(0)
    masks = [rng.random(w.shape) < 0.3 for w in net.weights]
    trained = T.train(net, X, y, epochs=5, lr=0.1, weight_decay=1e-3, masks=masks, rng=0)
    assert trained.dtype == np.dtype(dtype)
    for m, w, w0 in zip(masks, trained.weights, net.weights):
        np.testing.assert_array_equal(w[~m], 0.0)
        assert np.all(w[m] != w0[m])  # the kept weights did train


def test_step_schedule_scales_the_learning_rate():
    X, y = blobs(n=30)
    net = T.init_mlp([5, 4, 3], rng=0)
    # with the learning rate cut to 0 from epoch 0 (gamma tiny), nothing moves
    frozen = T.train(net, X, y, epochs=2, lr=0.1, milestones=[0], gamma=1e-300, momentum=0.0,
                     weight_decay=0.0, rng=0)
    np.testing.assert_allclose(frozen.weights[0], net.weights[0], rtol=0, atol=1e-250)
    moved = T.train(net, X, y, epochs=2, lr=0.1, milestones=[5], momentum=0.0, rng=0)
    assert not np.allclose(moved.weights[0], net.weights[0])


def numerical_gradient(net, X, y, layer, h=1e-6):
    W = net.weights[layer]
    grad = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        plus, minus = W.copy(), W.copy()
        plus[idx] += h
        minus[idx] -= h
        ws_p = list(net.weights)
        ws_m = list(net.weights)
        ws_p[layer], ws_m[layer] = plus, minus
        grad[idx] = (T.cross_entropy(net.with_weights(ws_p), X, y)
                     - T.cross_entropy(net.with_weights(ws_m), X, y)) / (2 * h)
    return grad


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu"])
def test_backprop_gradients_match_finite_differences(activation):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((7, 4))
    y = rng.integers(0, 3, size=7)
    net = T.init_mlp([4, 6, 5, 3], activation, rng=2)
    # nonzero biases so ReLU kinks are away from the evaluation point
    net = Network([Dense(l.weight, rng.standard_normal(l.n_out) * 0.3, l.activation) for l in net.layers])
    loss, gW, gb = T.loss_and_gradients(net, X, y)
    np.testing.assert_allclose(loss, T.cross_entropy(net, X, y), rtol=1e-12)
    for layer in range(3):
        np.testing.assert_allclose(gW[layer], numerical_gradient(net, X, y, layer), rtol=1e-5, atol=1e-8)
    # the bias gradient: perturb one bias entry
    h = 1e-6
    b = net.layers[1].bias
    for i in range(b.size):
        bp, bm = b.copy(), b.copy()
        bp[i] += h
        bm[i] -= h
        lp = T.cross_entropy(Network([net.layers[0], Dense(net.layers[1].weight, bp, activation), net.layers[2]]), X, y)
        lm = T.cross_entropy(Network([net.layers[0], Dense(net.layers[1].weight, bm, activation), net.layers[2]]), X, y)
        np.testing.assert_allclose(gb[1][i], (lp - lm) / (2 * h), rtol=1e-5, atol=1e-8)


def test_layer_without_bias_has_no_bias_gradient():
    rng = np.random.default_rng(0)
    net = Network([Dense(rng.standard_normal((4, 3)), None, "relu"), Dense(rng.standard_normal((2, 4)))])
    X = rng.standard_normal((5, 3))
    _, gW, gb = T.loss_and_gradients(net, X, np.array([0, 1, 1, 0, 1]))
    assert gb == [None, None]
    trained = T.train(net, X, np.array([0, 1, 1, 0, 1]), epochs=2, rng=0)
    assert trained.layers[0].bias is None


def test_recall_and_accuracy_on_a_hand_made_case():
    # identity network: the predicted class is the argmax of the input
    net = Network([Dense(np.eye(3))])
    X = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    y = np.array([0, 1, 1, 2])
    np.testing.assert_allclose(T.accuracy(net, X, y), 0.75)
    np.testing.assert_allclose(T.per_class_recall(net, X, y), [1.0, 0.5, 1.0])
    np.testing.assert_array_equal(T.predict(net, X), [0, 1, 0, 2])


def test_errors_name_the_parameter():
    X, y = blobs(n=12)
    net = T.init_mlp([5, 4, 3], rng=0)
    with pytest.raises(ValueError, match="y: labels must lie in 0..2"):
        T.train(net, X, y + 5, epochs=1)
    with pytest.raises(TypeError, match="y: expected integer class labels"):
        T.train(net, X, y + 0.5, epochs=1)
    with pytest.raises(ValueError, match=r"lr: must be in \(0"):
        T.train(net, X, y, lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        T.train(net, X, y, momentum=1.5)
    with pytest.raises(ValueError, match="masks\\[0\\]: expected shape"):
        T.train(net, X, y, masks=[np.ones((2, 2), bool), np.ones((3, 4), bool)])
    with pytest.raises(TypeError, match="masks\\[0\\]: expected a boolean"):
        T.train(net, X, y, masks=[np.ones((4, 5)), np.ones((3, 4))])
    relu_out = Network([Dense(np.ones((3, 5)), None, "relu")])
    with pytest.raises(ValueError, match="activation must be 'identity'"):
        T.train(relu_out, X, y)


def test_divergence_is_reported():
    X, y = blobs(n=30)
    X = X * 1e3
    net = T.init_mlp([5, 16, 3], rng=0)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="lr: training diverged"):
        T.train(net, X, y, epochs=30, lr=1e6, momentum=0.99, rng=0)
