"""SimpleITK's registration, the way its users set it up, on medjax's arrays:
the reference the iterative and learned rows of the study are compared with.

Affine: ``CenteredTransformInitializer`` (geometry), Mattes MI with 32 bins on a
random 20 % of the voxels, regular-step gradient descent with physical-shift
scales, shrink factors 4-2-1 with smoothing 2-1-0 voxels. B-spline: an affine
stage as above, then a ``BSplineTransformInitializer`` mesh with one node per
``grid_spacing`` voxels, L-BFGS-B, the same pyramid. Needs the ``itk`` extra.

Arrays are in medjax's voxel index order ``(i, j[, k])``; SimpleITK's
``GetImageFromArray`` reads ``[z, y, x]``, so arrays are transposed on the way
in and out. The result comes back as medjax's pull-back displacement in voxels
(``warped(x) = moving(x + d(x))``).
"""

import time

import numpy as np


def _image(array: np.ndarray, spacing) -> "sitk.Image":  # noqa: F821
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.T, np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def _method(shrink=(4, 2, 1), smoothing=(2, 1, 0), bins=32, sampling=0.2, seed=0):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smoothing))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def register(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    transform: str = "affine",
    spacing=None,
    grid_spacing: int = 8,
    iterations: int = 200,
    bins: int = 32,
    seed: int = 0,
) -> dict:
    """Registers ``moving`` onto ``fixed`` (``[*S]`` arrays, 2D or 3D) with
    SimpleITK.

    Returns:
        ``displacement [*S, ndim]`` (medjax's pull-back, voxels) and ``seconds``
        (the registration's wall clock, conversions excluded).
    """
    import SimpleITK as sitk

    ndim = fixed.ndim
    spacing = spacing or (1.0,) * ndim
    fixed_image, moving_image = _image(fixed, spacing), _image(moving, spacing)
    start = time.perf_counter()
    initial = sitk.CenteredTransformInitializer(
        fixed_image, moving_image, sitk.AffineTransform(ndim),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    method = _method(bins=bins, seed=seed)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    affine = method.Execute(fixed_image, moving_image)
    final = affine
    if transform == "bspline":
        mesh = [max(1, int(round(n / grid_spacing))) for n in fixed.shape]
        bspline = sitk.BSplineTransformInitializer(fixed_image, mesh, order=3)
        method = _method(bins=bins, seed=seed)
        method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                                    numberOfIterations=iterations)
        method.SetMovingInitialTransform(affine)
        method.SetInitialTransform(bspline, inPlace=True)
        method.Execute(fixed_image, moving_image)
        final = sitk.CompositeTransform([affine, bspline])
    elif transform != "affine":
        raise ValueError(f"transform: expected affine or bspline, got {transform!r}")
    seconds = time.perf_counter() - start
    to_field = sitk.TransformToDisplacementFieldFilter()
    to_field.SetReferenceImage(fixed_image)
    to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
    field = sitk.GetArrayFromImage(to_field.Execute(final))  # [z, y, x, ndim], physical
    displacement = np.transpose(field, tuple(range(ndim - 1, -1, -1)) + (ndim,))
    return {"displacement": (displacement / np.asarray(spacing)).astype(np.float32),
            "seconds": seconds}
