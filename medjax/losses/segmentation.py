"""Dense (segmentation) losses, per example.

Shared conventions: ``logits [B, *spatial, C]`` are channels-last, ``labels
[B, *spatial]`` hold integer class ids in ``[0, C)``, ``spatial`` may have any number
of axes (2D, 3D; zero where a loss makes sense for ``[B, C]`` classification logits).
Every loss returns one value per example, ``[B]``, and ``mask [B]`` (validity of
each example) zeroes padded examples exactly with ``jnp.where``. Denominators are
guarded so that a padded example with arbitrary content has a finite value and a
finite gradient (``jnp.where`` would otherwise pass a NaN gradient through).
"""

import jax
import jax.numpy as jnp
import optax


def _voxel_axes(labels: jnp.ndarray) -> tuple[int, ...]:
    """The spatial axes of ``labels [B, *spatial]`` (empty for ``[B]``)."""
    return tuple(range(1, labels.ndim))


def _check_dense(logits: jnp.ndarray, labels: jnp.ndarray, name: str) -> None:
    # Shapes are static, so this runs once at trace time, before compilation.
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"{name}: logits must be [B, *spatial, C] and labels [B, *spatial]; got "
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )


def _check_class_weights(
    class_weights: jnp.ndarray | None, num_classes: int, name: str
) -> None:
    if class_weights is not None and jnp.shape(class_weights) != (num_classes,):
        raise ValueError(
            f"{name}: class_weights must have shape [C] = ({num_classes},); got "
            f"{tuple(jnp.shape(class_weights))}"
        )


def _weighted_voxel_mean(
    values: jnp.ndarray, labels: jnp.ndarray, class_weights: jnp.ndarray | None
) -> jnp.ndarray:
    """Per-example mean of voxel ``values [B, *spatial]``; with ``class_weights [C]``
    the weighted mean ``sum(w_y * values) / sum(w_y)`` (PyTorch ``weight=``)."""
    axes = _voxel_axes(labels)
    if class_weights is None:
        return jnp.mean(values, axis=axes)
    weights = jnp.asarray(class_weights, values.dtype)[labels]
    total = jnp.sum(weights, axis=axes)
    # An example whose voxels all carry weight 0 has loss 0, not 0/0.
    return jnp.sum(weights * values, axis=axes) / jnp.where(total > 0, total, 1.0)


def _require_spatial_for_weights(labels, class_weights, name: str) -> None:
    if class_weights is not None and labels.ndim < 2:
        # Normalising by sum(w_y) within one example cancels the weight when the
        # example is a single label; the weight belongs in the batch reduction then.
        raise ValueError(
            f"{name}: class_weights needs spatial labels [B, *spatial]; for labels "
            f"{tuple(labels.shape)} weight the examples in the batch reduction instead"
        )


def dense_cross_entropy(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    class_weights: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Softmax cross-entropy per voxel, averaged over the voxels of each example.

    With ``class_weights`` each voxel counts with the weight of its true class and the
    mean is normalised by the weights, ``sum(w_y * ce) / sum(w_y)``, per example (the
    semantics of PyTorch ``CrossEntropyLoss(weight=)``, applied within one example).

    Args:
        logits: ``[B, *spatial, C]`` unnormalised class scores.
        labels: ``[B, *spatial]`` integer class ids in ``[0, C)``.
        class_weights: optional ``[C]`` non-negative weight of each class; needs at
            least one spatial axis (with none, the normalisation cancels the weight).
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B]`` loss per example; exactly 0 where ``mask`` is false.
    """
    _check_dense(logits, labels, "dense_cross_entropy")
    _check_class_weights(class_weights, logits.shape[-1], "dense_cross_entropy")
    _require_spatial_for_weights(labels, class_weights, "dense_cross_entropy")
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    losses = _weighted_voxel_mean(ce, labels, class_weights)
    return losses if mask is None else jnp.where(mask, losses, 0.0)


def softmax_focal_loss(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    gamma: float = 2.0,
    class_weights: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Multi-class focal loss (Lin et al. 2017), averaged over voxels per example.

    Per voxel ``-w_y (1 - p_y)^gamma log p_y`` with ``p = softmax(logits)``; the mean
    over voxels is normalised like :func:`dense_cross_entropy`, so ``gamma=0`` gives
    exactly the (weighted) cross-entropy. Works for classification logits ``[B, C]``
    with labels ``[B]`` (the mean over zero spatial axes is the value itself).

    Args:
        logits: ``[B, *spatial, C]`` unnormalised class scores.
        labels: ``[B, *spatial]`` integer class ids in ``[0, C)``.
        gamma: focusing exponent, ``>= 0``.
        class_weights: optional ``[C]`` class weights, as in dense_cross_entropy.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B]`` loss per example; exactly 0 where ``mask`` is false.
    """
    _check_dense(logits, labels, "softmax_focal_loss")
    _check_class_weights(class_weights, logits.shape[-1], "softmax_focal_loss")
    _require_spatial_for_weights(labels, class_weights, "softmax_focal_loss")
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # -log p_y
    if isinstance(gamma, (int, float)) and gamma == 0:
        focal = ce  # avoids the NaN gradient of 0**0 where p_y rounds to 1
    else:
        one_minus_p = -jnp.expm1(-ce)  # 1 - p_y without cancellation
        tiny = jnp.finfo(ce.dtype).tiny
        focal = jnp.power(jnp.maximum(one_minus_p, tiny), gamma) * ce
    losses = _weighted_voxel_mean(focal, labels, class_weights)
    return losses if mask is None else jnp.where(mask, losses, 0.0)


def _per_class_loss_mean(
    per_class: jnp.ndarray,
    include_background: bool,
    class_weights: jnp.ndarray | None,
) -> jnp.ndarray:
    """(Weighted) mean over the included classes of ``per_class [B, C]``; ``[B]``."""
    num_classes = per_class.shape[-1]
    weights = (
        jnp.ones((num_classes,), per_class.dtype)
        if class_weights is None
        else jnp.asarray(class_weights, per_class.dtype)
    )
    if not include_background:
        per_class, weights = per_class[:, 1:], weights[1:]
    return jnp.sum(per_class * weights, axis=-1) / jnp.sum(weights)


def _overlap_loss(
    logits, labels, *, alpha, beta, include_background, class_weights, smooth, name
) -> jnp.ndarray:
    _check_dense(logits, labels, name)
    num_classes = logits.shape[-1]
    _check_class_weights(class_weights, num_classes, name)
    if num_classes < 2:
        raise ValueError(f"{name}: needs C >= 2 classes; got C = {num_classes}")
    # optax's dice_loss is the Tversky form (I + s) / (I + a (P - I) + b (T - I) + s)
    # with soft I = TP, P - I = FP, T - I = FN, per example and class.
    per_class = optax.losses.dice_loss(
        logits,
        jax.nn.one_hot(labels, num_classes, dtype=logits.dtype),
        smooth=smooth,
        alpha=alpha,
        beta=beta,
        reduction="none",
        axis=_voxel_axes(labels),
    )
    return _per_class_loss_mean(per_class, include_background, class_weights)


def soft_dice_loss(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    include_background: bool = False,
    class_weights: jnp.ndarray | None = None,
    smooth: float = 1e-5,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Soft Dice loss of softmax probabilities, per example.

    For each example and class ``c``, with ``p = softmax(logits)`` and one-hot
    ``g``, summing over the voxels of that example:
    ``dice_c = (2 sum(p_c g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)``
    (MONAI ``DiceLoss`` with ``smooth_nr = smooth_dr = smooth``), and the loss is
    ``1 - sum_c w_c dice_c / sum_c w_c`` over the included classes (plain mean without
    ``class_weights``). Unlike MONAI, the class weights are normalised, so the loss
    stays in ``[0, 1]``. A class absent from both truth and prediction has
    ``dice_c`` near 1 (the smoothing term), as in MONAI.

    Args:
        logits: ``[B, *spatial, C]`` unnormalised class scores, ``C >= 2``.
        labels: ``[B, *spatial]`` integer class ids in ``[0, C)``.
        include_background: if false, class 0 is left out of the mean.
        class_weights: optional ``[C]`` weights of the classes (the background entry
            is ignored when it is left out).
        smooth: added to numerator and denominator.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B]`` loss per example in ``[0, 1]``; exactly 0 where ``mask`` is false.
    """
    # MONAI's (2I + s) / (P + T + s) is optax's (I + s') / (I + (P-I)/2 + (T-I)/2 + s')
    # with s' = s / 2.
    losses = _overlap_loss(
        logits,
        labels,
        alpha=0.5,
        beta=0.5,
        include_background=include_background,
        class_weights=class_weights,
        smooth=smooth / 2,
        name="soft_dice_loss",
    )
    return losses if mask is None else jnp.where(mask, losses, 0.0)


def tversky_loss(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    include_background: bool = False,
    class_weights: jnp.ndarray | None = None,
    smooth: float = 1e-5,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Tversky loss (Salehi et al. 2017) of softmax probabilities, per example.

    For each example and class, with soft counts ``TP = sum(p g)``,
    ``FP = sum(p (1 - g))`` and ``FN = sum((1 - p) g)`` over its voxels,
    ``TI = (TP + smooth) / (TP + alpha FP + beta FN + smooth)`` (``alpha`` weighs false
    positives and ``beta`` false negatives, as in MONAI ``TverskyLoss``); the loss is
    ``1 -`` the (weighted) mean of ``TI`` over the included classes, as in
    :func:`soft_dice_loss`. ``alpha = beta = 0.5`` gives the soft Dice loss (exactly
    ``soft_dice_loss(smooth=2 * smooth)``).

    Args:
        logits: ``[B, *spatial, C]`` unnormalised class scores, ``C >= 2``.
        labels: ``[B, *spatial]`` integer class ids in ``[0, C)``.
        alpha: weight of false positives.
        beta: weight of false negatives; ``beta > alpha`` favours recall.
        include_background: if false, class 0 is left out of the mean.
        class_weights: optional ``[C]`` weights of the classes.
        smooth: added to numerator and denominator.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B]`` loss per example; exactly 0 where ``mask`` is false.
    """
    losses = _overlap_loss(
        logits,
        labels,
        alpha=alpha,
        beta=beta,
        include_background=include_background,
        class_weights=class_weights,
        smooth=smooth,
        name="tversky_loss",
    )
    return losses if mask is None else jnp.where(mask, losses, 0.0)


def dice_ce_loss(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    include_background: bool = False,
    class_weights: jnp.ndarray | None = None,
    smooth: float = 1e-5,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """``dice_weight * soft_dice_loss + ce_weight * dense_cross_entropy`` per example.

    As in MONAI ``DiceCELoss``: ``class_weights`` weigh both terms, while
    ``include_background`` only concerns the Dice term (cross-entropy always covers
    every class).

    Args:
        logits: ``[B, *spatial, C]`` unnormalised class scores, ``C >= 2``.
        labels: ``[B, *spatial]`` integer class ids in ``[0, C)``.
        dice_weight: factor of the soft Dice loss.
        ce_weight: factor of the cross-entropy.
        include_background: if false, class 0 is left out of the Dice mean.
        class_weights: optional ``[C]`` weights of the classes.
        smooth: Dice smoothing term.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B]`` loss per example; exactly 0 where ``mask`` is false.
    """
    dice = soft_dice_loss(
        logits,
        labels,
        include_background=include_background,
        class_weights=class_weights,
        smooth=smooth,
    )
    ce = dense_cross_entropy(logits, labels, class_weights=class_weights)
    losses = dice_weight * dice + ce_weight * ce
    return losses if mask is None else jnp.where(mask, losses, 0.0)


SEGMENTATION_LOSSES = {
    "dice": soft_dice_loss,
    "dice_ce": dice_ce_loss,
    "cross_entropy": dense_cross_entropy,
    "focal": softmax_focal_loss,
    "tversky": tversky_loss,
}
"""Segmentation losses by the name a task config uses; each is
``fn(logits [B, *spatial, C], labels [B, *spatial], **options) -> [B]``."""


def segmentation_loss(
    name: str, logits: jnp.ndarray, labels: jnp.ndarray, **kwargs
) -> jnp.ndarray:
    """The loss ``SEGMENTATION_LOSSES[name](logits, labels, **kwargs)``; ``[B]``.

    Args:
        name: one of ``SEGMENTATION_LOSSES`` (dice, dice_ce, cross_entropy, focal,
            tversky).
        logits: ``[B, *spatial, C]`` unnormalised class scores.
        labels: ``[B, *spatial]`` integer class ids.
        **kwargs: keyword options of that loss, including ``mask [B]``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(
            f"unknown segmentation loss {name!r}; expected one of "
            f"{', '.join(sorted(SEGMENTATION_LOSSES))}"
        )
    return SEGMENTATION_LOSSES[name](logits, labels, **kwargs)
