"""Image-quality metrics from scikit-image: PSNR and SSIM averaged over a batch of images."""

from __future__ import annotations

import numpy as np

PSNR_CAP = 100.0  # dB given to an exact reconstruction (skimage says inf), so averages and JSON stay finite


def psnr_ssim(reference: np.ndarray, images: np.ndarray, data_range: float = 1.0) -> tuple[float, float]:
    """Mean per-image PSNR (dB) and SSIM of ``images`` against ``reference``, both (N, C, H, W) or (N, H, W).

    Each image is scored on its own with ``skimage.metrics`` (SSIM with its default uniform 7×7 window, or
    the largest odd window that fits smaller images; colour channels via ``channel_axis``), then averaged — the
    usual way autoencoder papers report them.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    reference, images = np.asarray(reference, dtype=np.float64), np.asarray(images, dtype=np.float64)
    if reference.shape != images.shape or reference.ndim not in (3, 4) or len(reference) == 0:
        raise ValueError(f"need two equal (N, C, H, W) or (N, H, W) batches, got {reference.shape}, {images.shape}")
    side = min(reference.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        raise ValueError(f"images of {reference.shape[-2]}×{reference.shape[-1]} px are too small for SSIM")
    psnrs, ssims = [], []
    for ref, img in zip(reference, images):
        colour = ref.ndim == 3 and ref.shape[0] > 1
        if ref.ndim == 3 and not colour:
            ref, img = ref[0], img[0]
        error = np.mean((ref - img) ** 2)
        psnrs.append(PSNR_CAP if error == 0 else min(PSNR_CAP, peak_signal_noise_ratio(ref, img,
                                                                                      data_range=data_range)))
        ssims.append(structural_similarity(ref, img, data_range=data_range, win_size=window,
                                           channel_axis=0 if colour else None))
    return float(np.mean(psnrs)), float(np.mean(ssims))
