"""Latent codes of an autoencoder: encode a split, project the codes on their
first principal components, export both with a scatter figure."""

import os

import jax
import numpy as np

from medjax.data import pipeline


def pca_projection(latents: np.ndarray, num_components: int = 2):
    """Principal components of ``latents [N, L]`` by numpy SVD of the centred
    codes: ``(projection [N, k], explained_variance_ratio [k])``, components
    with a deterministic sign (largest loading positive)."""
    latents = np.asarray(latents, np.float64)
    centred = latents - latents.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(num_components, vt.shape[0])
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    components = components * signs[:, None]
    projection = centred @ components.T
    if k < num_components:  # fewer codes or dimensions than components
        projection = np.pad(projection, ((0, 0), (0, num_components - k)))
    total = np.sum(singular**2)
    ratio = singular[:k] ** 2 / total if total > 0 else np.zeros(k)
    return projection, np.pad(ratio, (0, num_components - k))


def encode_split(
    model, variables: dict, data, split: str, *, image_key: str = "image",
    label_key: str | None = "label", batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[N, L]`` (the model's ``latent`` output at evaluation: a VAE's
    posterior mean) and labels ``[N]`` (zeros when ``label_key`` is None) of
    every example of ``data``'s ``split``, in order. Runs on the default device,
    in one process."""
    keys = (image_key,) + ((label_key,) if label_key else ())
    apply = jax.jit(lambda x: model.apply(variables, x, train=False)["latent"])
    codes, labels = [], []
    for batch in pipeline.eval_batches(
        data.source(split), batch_size=batch_size or data.eval_batch_size,
        convert=data.convert, keys=keys, num_threads=data.num_threads,
    ):
        valid = batch["valid"]
        codes.append(np.asarray(apply(batch[image_key]))[valid])
        labels.append(batch[label_key][valid] if label_key else np.zeros(valid.sum(), int))
    codes = np.concatenate(codes).reshape(sum(len(c) for c in codes), -1)
    return codes, np.concatenate(labels)


def export_latents(
    model, variables: dict, data, split: str, out_dir: str, *, image_key: str = "image",
    label_key: str | None = "label", title: str = "",
) -> dict[str, np.ndarray]:
    """Encodes ``split`` and writes to ``out_dir``:

    - ``latents.npz``: ``latents [N, L]``, ``labels [N]``, ``projection [N, 2]``
      (PCA by numpy SVD, see :func:`pca_projection`) and
      ``explained_variance_ratio [2]``;
    - ``latents_pca.png``: the projection, coloured by label.

    Returns the arrays written.
    """
    latents, labels = encode_split(
        model, variables, data, split, image_key=image_key, label_key=label_key
    )
    projection, ratio = pca_projection(latents, 2)
    result = {
        "latents": latents, "labels": labels, "projection": projection,
        "explained_variance_ratio": ratio,
    }
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "latents.npz"), **result)
    from medjax.viz.reconstruction import draw_projection  # matplotlib only here

    draw_projection(projection, labels, ratio, os.path.join(out_dir, "latents_pca.png"),
                    title=title or f"{split}: latent codes, PCA")
    return result
