import jax.numpy as jnp
import numpy as np
import optax

from medjax.models.sequence.gradients import input_gradient_norms

B, T, F, C = 5, 7, 3, 4


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_linear_model_over_time_matches_the_gradient_by_hand():
    # logits_b = sum_t x_{b,t} W_t + bias, so dL_b/dx_{b,t} = W_t (p_b - onehot(y_b)).
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(T, F, C)).astype(np.float32)
    weights[2] = 0.0  # a frame the model ignores gets no gradient
    bias = rng.normal(size=C).astype(np.float32)
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    y = rng.integers(0, C, B)

    def apply_fn(variables, inputs):
        return jnp.einsum("btf,tfc->bc", inputs, variables["w"]) + variables["b"]

    norms = input_gradient_norms(apply_fn, {"w": weights, "b": bias}, x, y)

    logits = np.einsum("btf,tfc->bc", x, weights) + bias
    error = softmax(logits) - np.eye(C)[y]  # [B, C]
    grads = np.einsum("tfc,bc->btf", weights, error)  # [B, T, F]
    expected = np.linalg.norm(grads, axis=-1).mean(0)  # [T]
    assert norms.shape == (T,)
    np.testing.assert_allclose(norms, expected, rtol=1e-5, atol=1e-7)
    assert norms[2] == 0.0 and np.all(np.delete(np.asarray(norms), 2) > 0)


def test_frames_after_the_last_one_read_get_zero_gradient_with_a_custom_loss():
    # A regression model reading frame 3 of images [B, T, 2, 2]: the norm runs
    # over all of a frame's axes; squared error gives dL_b/dx_{b,3} = 2 (x3.w - y) w.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, 2, 2)).astype(np.float32)
    w = rng.normal(size=(2, 2)).astype(np.float32)
    y = rng.normal(size=B).astype(np.float32)

    def apply_fn(variables, inputs):
        return jnp.sum(inputs[:, 3] * variables, axis=(1, 2))

    norms = input_gradient_norms(apply_fn, w, x, y, loss_fn=optax.squared_error)
    residual = np.sum(x[:, 3] * w, axis=(1, 2)) - y
    expected = np.zeros(T)
    expected[3] = np.mean(2 * np.abs(residual)) * np.linalg.norm(w)
    np.testing.assert_allclose(norms, expected, rtol=1e-5, atol=1e-7)
