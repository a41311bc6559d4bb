"""MS-SSIM and PSNR in float64 numpy: the reference metric for evaluation.

Why it exists: the paper reports MS-SSIM (Wang, Simoncelli, Bovik 2003) as computed by the authors'
numpy port of the original MATLAB code. This module implements that definition so evaluation numbers
are comparable, and it is the ground truth that the TensorFlow training loss (``ms_ssim.py``) is
tested against.

Definition (K1 = 0.01, K2 = 0.03, L = max_val, C1 = (K1 L)^2, C2 = (K2 L)^2), for 5 scales l = 1..5:

* window: size s_l = min(11, H_l, W_l), sigma_l = 1.5 * s_l / 11, a 2-D Gaussian as MATLAB's
  ``fspecial('gaussian', s, sigma)`` (s x s, centred; for an even s the centre lies between pixels),
  normalised to sum 1, applied with 'valid' filtering to every image and channel;
* mu1, mu2 = w * x, w * y;  sigma11 = w * x^2 - mu1^2;  sigma22 = w * y^2 - mu2^2;
  sigma12 = w * (x y) - mu1 mu2;
* cs map = (2 sigma12 + C2) / (sigma11 + sigma22 + C2);
  ssim map = (2 mu1 mu2 + C1) / (mu1^2 + mu2^2 + C1) * cs map;
* cs_l, ssim_l = means of the maps jointly over batch, space and channels;
* between scales both images are downsampled by averaging 2x2 blocks of pixels (2k, 2k+1) in each
  spatial axis (for an odd size the last pixel is reflected, i.e. averaged with itself);

MS-SSIM = prod_{l=1..4} cs_l^{w_l} * ssim_5^{w_5},  w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).

Like the original this is undefined (NaN, with a numpy warning) if some cs_l or ssim_5 is negative,
which only happens for essentially unrelated images; the TF loss clamps those terms instead.
"""
import numpy as np
from scipy import ndimage, signal

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1 = 0.01
K2 = 0.03
FILTER_SIZE = 11
FILTER_SIGMA = 1.5


def window_params(height, width):
    """Window (size, sigma) used at a scale of spatial size height x width."""
    size = min(FILTER_SIZE, height, width)
    sigma = FILTER_SIGMA * size / FILTER_SIZE
    return size, sigma


def gaussian_1d(size, sigma):
    """Normalised 1-D Gaussian, shape (size,), centred (between pixels for even size)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.
    g = np.exp(-x ** 2 / (2. * sigma ** 2))
    return g / g.sum()


def fspecial_gauss(size, sigma):
    """MATLAB-style 2-D Gaussian window, shape (size, size), sums to 1 (outer product of 1-D ones)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2. * sigma ** 2))
    return g / g.sum()


def _as_batch(img1, img2):
    """Checks shapes; returns both images as float64 N x H x W x C."""
    a = np.asarray(img1, dtype=np.float64)
    b = np.asarray(img2, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError('ms_ssim/psnr: image shapes differ: {} vs {}'.format(a.shape, b.shape))
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError('ms_ssim/psnr: expected H x W x C or N x H x W x C images, got shape {}'
                         .format(np.shape(img1)))
    return a, b


def ssim_and_cs(img1, img2, max_val=255):
    """Single-scale SSIM and contrast-structure term, N x H x W x C float64 -> (ssim, cs) floats."""
    _, height, width, _ = img1.shape
    size, sigma = window_params(height, width)
    window = fspecial_gauss(size, sigma)[None, :, :, None]
    c1 = (K1 * max_val) ** 2
    c2 = (K2 * max_val) ** 2

    def filt(x):
        return signal.fftconvolve(x, window, mode='valid')

    mu1, mu2 = filt(img1), filt(img2)
    sigma11 = filt(img1 * img1) - mu1 * mu1
    sigma22 = filt(img2 * img2) - mu2 * mu2
    sigma12 = filt(img1 * img2) - mu1 * mu2
    cs_map = (2. * sigma12 + c2) / (sigma11 + sigma22 + c2)
    ssim_map = (2. * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map
    return float(np.mean(ssim_map)), float(np.mean(cs_map))


def downsample(img):
    """Averages 2x2 blocks (reflecting the last pixel for odd sizes): N x H x W x C -> ceil halves."""
    box = np.ones((1, 2, 2, 1), dtype=np.float64) / 4.
    return ndimage.convolve(img, box, mode='reflect')[:, ::2, ::2, :]


def ms_ssim(img1, img2, max_val=255):
    """MS-SSIM of two images or batches (H x W x C or N x H x W x C, values 0..max_val) -> float.

    Statistics are pooled over the whole batch and all channels (one number for the batch).
    """
    a, b = _as_batch(img1, img2)
    cs_terms = []
    ssim_last = None
    for level in range(len(WEIGHTS)):
        ssim_l, cs_l = ssim_and_cs(a, b, max_val)
        cs_terms.append(cs_l)
        ssim_last = ssim_l
        if level < len(WEIGHTS) - 1:
            a, b = downsample(a), downsample(b)
    cs_terms = np.array(cs_terms[:-1])
    weights = np.array(WEIGHTS)
    return float(np.prod(cs_terms ** weights[:-1]) * ssim_last ** weights[-1])


def ms_ssim_per_image(img1, img2, max_val=255):
    """MS-SSIM of each image of a batch: N x H x W x C -> float64 array (N,)."""
    a, b = _as_batch(img1, img2)
    return np.array([ms_ssim(x, y, max_val) for x, y in zip(a, b)])


def psnr(img1, img2, max_val=255):
    """PSNR in dB over the whole image/batch (all channels) -> float (inf for identical images)."""
    a, b = _as_batch(img1, img2)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float('inf')
    return float(10. * np.log10(max_val ** 2 / mse))
