"""Image fidelity over a whole evaluation set: FID (r-FID / g-FID) and PSNR, SSIM, MS-SSIM, LPIPS.

Two accumulating Ignite metrics, in the style of :class:`~medvq.metrics.CodebookCoverage` (sums accumulated per
iteration, all-reduced with :func:`~ignite.metrics.metric.sync_all_reduce`, turned into numbers once at the end, so
every DDP rank gets the whole-set result):

- :class:`FID` streams fake and real images through a feature extractor into float64 feature statistics (images are
  never kept) and returns the Fréchet distance (the math and the extractors live in :mod:`medvq.metrics.fid`, whose
  public names this module re-exports);
- :class:`ImageFidelity` averages per-image PSNR, SSIM and MS-SSIM from MONAI's metrics, and LPIPS when the
  ``lpips`` package and its weights are on this machine. A metric that cannot be computed is ``None`` with a
  ``*_note`` saying why, never 0.

The function forms :func:`~medvq.metrics.fid.fid_from_batches` and :func:`image_fidelity` compute the same numbers
from iterables of batches without an engine. Definitions and caveats: ``docs/metrics.md`` ("Fidelity metrics").
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import ignite.distributed as idist
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, SSIMMetric

from medvq.metrics.fid import (
    EXTRACTOR_KINDS,
    FID_EXTRACTOR_CONFIG_KEY,
    INCEPTION_NAME,
    INCEPTION_URL,
    ExtractorInfo,
    FeatureExtractor,
    FeatureStatistics,
    FIDResult,
    default_extractor_dirs,
    feature_statistics,
    fid_from_batches,
    frechet_distance,
    load_feature_extractor,
)

__all__ = [
    "EXTRACTOR_KINDS",
    "FID",
    "FID_EXTRACTOR_CONFIG_KEY",
    "INCEPTION_NAME",
    "INCEPTION_URL",
    "MS_SSIM_WEIGHTS",
    "ExtractorInfo",
    "FIDResult",
    "FeatureExtractor",
    "FeatureStatistics",
    "ImageFidelity",
    "LPIPSStatus",
    "default_extractor_dirs",
    "feature_statistics",
    "fid_from_batches",
    "frechet_distance",
    "image_fidelity",
    "load_feature_extractor",
    "lpips_status",
    "ms_ssim_min_size",
]

#: MONAI's (and Wang et al. 2003's) five MS-SSIM scale weights
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# torchvision weight enums of the LPIPS backbones; their file names are what torch's hub cache must hold
_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def _pair(output: Any, what: str) -> tuple[Any, Any]:
    if isinstance(output, (tuple, list)) and len(output) == 2:
        return output[0], output[1]
    if isinstance(output, Mapping) and {"fake", "real"} <= set(output):
        return output["fake"], output["real"]
    raise TypeError(
        f"{what} output must be a pair (fake_images, real_images) or a mapping with keys 'fake' and 'real', got "
        f"{type(output).__name__}: use output_transform to select them, e.g. "
        "lambda out: (out['reconstruction'], out['image'])."
    )


def _check_images(images: Any, argument: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(
            f"{argument} must be a floating tensor in [-1, 1], got {getattr(images, 'dtype', type(images).__name__)}."
        )
    if images.ndim < 3 or images.shape[0] == 0:
        raise ValueError(f"{argument} must be a non-empty (B, C, *spatial) batch, got {tuple(images.shape)}.")
    return images.detach()


# ================================================================================================ FID
class FID(Metric):
    """Fréchet distance between the extractor features of fake and real images over a whole evaluation run.

    Each :meth:`update` takes ``(fake_images, real_images)`` in [-1, 1] (e.g. reconstructions and their inputs for
    r-FID), runs both through ``extractor`` and adds the features to float64 sums ``n``, ``s = sum_i x_i`` and
    ``S = sum_i x_i x_i^T`` per set (:class:`~medvq.metrics.fid.FeatureStatistics`). :meth:`compute` all-reduces the
    sums over DDP ranks and returns a dict of Python numbers:

    - ``{prefix}{name}``: ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2})``
      (:func:`~medvq.metrics.fid.frechet_distance`);
    - ``{prefix}{name}_num_real``, ``{prefix}{name}_num_fake``: the image counts behind it (FID is biased upwards
      for small sets: only compare numbers with the same counts, extractor and resolution).

    :attr:`extractor_info` holds the extractor's identity (file, SHA-256, kind, input size) for the results file.
    For g-FID pass ``real_statistics`` (the real set's statistics, computed once with
    :func:`~medvq.metrics.fid.feature_statistics`) and feed ``(generated, None)``.

    Args:
        extractor: a :class:`~medvq.metrics.fid.FeatureExtractor` (from
            :func:`~medvq.metrics.fid.load_feature_extractor`) or any callable mapping ``(B, C, *spatial)`` images
            in [-1, 1] to ``(B, F)`` features (called without gradients).
        output_transform: maps ``engine.state.output`` to the pair. Default identity.
        device: device of the accumulated sums. Default ``"cpu"``; under DDP with ``nccl`` use the rank's CUDA
            device.
        name: result key. Default ``"fid"``; e.g. ``"rfid"`` or ``"gfid"``.
        prefix: prepended to every key, e.g. ``"val_"``. Default ``""``.
        num_features: F. Default None: from the extractor (2048 for Inception) or the first batch; set it for a
            generic extractor under DDP, so that a rank without batches still all-reduces the right shapes.
        real_statistics: precomputed statistics of the real set; then only fakes are accumulated. Default None.

    Raises:
        TypeError: ``extractor`` is not callable, ``name``/``prefix`` are not strings, or ``real_statistics`` is not
            :class:`~medvq.metrics.fid.FeatureStatistics`.
        ValueError: ``num_features`` is not an integer >= 1, ``name`` is empty, or ``real_statistics`` has fewer than
            2 rows or another F.

    Example:
        >>> # extractor = load_feature_extractor(config["fid_extractor_path"])
        >>> # FID(extractor, output_transform=lambda o: (o["reconstruction"], o["image"]), name="rfid",
        >>> #     prefix="val_").attach(evaluator, "rfid_metric")   # -> engine.state.metrics["val_rfid"]
    """

    required_output_keys = None  # update() parses the pair itself (see iteration_completed)

    def __init__(
        self,
        extractor: Callable[[torch.Tensor], torch.Tensor],
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
        name: str = "fid",
        prefix: str = "",
        num_features: int | None = None,
        real_statistics: FeatureStatistics | None = None,
    ) -> None:
        if not callable(extractor):
            raise TypeError(f"extractor must be callable (images -> (B, F) features), got {type(extractor).__name__}.")
        if not isinstance(name, str) or not isinstance(prefix, str):
            raise TypeError(f"name and prefix must be strings, got {type(name).__name__} and {type(prefix).__name__}.")
        if not name:
            raise ValueError("name must be a non-empty string, e.g. 'rfid'.")
        if num_features is not None and (
            isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1
        ):
            raise ValueError(f"num_features must be an integer >= 1 or None, got {num_features!r}.")
        if real_statistics is not None:
            if not isinstance(real_statistics, FeatureStatistics):
                raise TypeError(
                    f"real_statistics must be FeatureStatistics or None, got {type(real_statistics).__name__}."
                )
            if real_statistics.count < 2:
                raise ValueError(f"real_statistics must hold at least 2 images, got {real_statistics.count}.")
            if num_features is not None and real_statistics.num_features != num_features:
                raise ValueError(
                    f"real_statistics has F = {real_statistics.num_features} but num_features is {num_features}."
                )
            num_features = real_statistics.num_features
        self.extractor = extractor
        self.name = name
        self.prefix = prefix
        self.real_statistics = real_statistics
        self._num_features = num_features or getattr(extractor, "num_features", None)
        #: identity of the extractor (None for a plain callable); store it with the numbers
        self.extractor_info: ExtractorInfo | None = getattr(extractor, "info", None)
        super().__init__(output_transform=output_transform, device=device)  # calls reset()

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def reset(self) -> None:
        """Zero both sets' sums (Ignite calls this at the start of every evaluation epoch)."""
        f = self._num_features or 0  # 0: sized by the first batch
        self._fake_count = torch.zeros((), dtype=torch.int64, device=self._device)  # n_f
        self._fake_sum, self._fake_outer = self._zeros(f), self._zeros(f, f)  # (F,), (F, F)
        self._real_count = torch.zeros((), dtype=torch.int64, device=self._device)  # n_r
        self._real_sum, self._real_outer = self._zeros(f), self._zeros(f, f)

    def _features(self, images: torch.Tensor, argument: str) -> torch.Tensor:
        with torch.no_grad():
            features = self.extractor(images)
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != images.shape[0]:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(
                f"extractor must return (B, F) = ({images.shape[0]}, F) features of {argument}, got {shape}."
            )
        features = features.detach().to(device=self._device, dtype=torch.float64)  # (B, F)
        if self._fake_sum.numel() and features.shape[1] != self._fake_sum.numel():
            raise ValueError(
                f"extractor returned F = {features.shape[1]} features for {argument} but num_features is "
                f"{self._fake_sum.numel()}."
            )
        if not torch.isfinite(features).all():
            raise ValueError(f"features of {argument} have non-finite values: check the images and the extractor.")
        return features

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        """Add one batch.

        Args:
            output: ``(fake_images, real_images)`` or a mapping with keys ``"fake"`` and ``"real"``; each
                ``(B, C, *spatial)`` floating in [-1, 1]; ``real_images`` is None when ``real_statistics`` was given
                (and may be None to add fakes only). The two batches may differ in size.

        Raises:
            TypeError: ``output`` is not such a pair, or the images are not floating tensors.
            ValueError: real images are given together with ``real_statistics``, or the features are not ``(B, F)``
                with the same F. Nothing is accumulated from a batch that raises.
        """
        # 1. validate and extract everything first, so that a bad batch leaves the sums untouched
        fake, real = _pair(output, "FID")
        if real is not None and self.real_statistics is not None:
            raise ValueError(
                "real images were given but real_statistics is set: feed (fake_images, None), or drop real_statistics."
            )
        batches = [
            (kind, _check_images(x, f"{kind}_images")) for kind, x in (("fake", fake), ("real", real)) if x is not None
        ]
        features = {kind: self._features(x, f"{kind}_images") for kind, x in batches}
        if len({f.shape[1] for f in features.values()}) > 1:
            raise ValueError(
                f"fake and real features differ in F: {features['fake'].shape[1]} vs {features['real'].shape[1]}."
            )
        # 2. size the sums by the first batch when F was not known
        if features and not self._fake_sum.numel():
            self._num_features = next(iter(features.values())).shape[1]
            self.reset()
        # 3. add the moments: n, s = sum_i x_i, S = sum_i x_i x_i^T
        for kind, x in features.items():
            count, total, outer = (f"_{kind}_count", f"_{kind}_sum", f"_{kind}_outer")
            setattr(self, count, getattr(self, count) + x.shape[0])
            getattr(self, total).add_(x.sum(dim=0))
            getattr(self, outer).add_(x.T @ x)  # (F, F)

    @torch.no_grad()
    def iteration_completed(self, engine: Any) -> None:
        """Pass ``output_transform(engine.state.output)`` to :meth:`update` unchanged (Ignite's default would unroll
        the pair, or require mapping keys)."""
        self.update(self._output_transform(engine.state.output))

    @sync_all_reduce("_fake_count", "_fake_sum", "_fake_outer", "_real_count", "_real_sum", "_real_outer")
    def _reduced_statistics(self) -> tuple[FeatureStatistics, FeatureStatistics]:
        """Fake and real statistics summed over all ranks."""
        fake = FeatureStatistics.from_sums(int(self._fake_count), self._fake_sum, self._fake_outer)
        if self.real_statistics is not None:
            return fake, self.real_statistics  # already whole-set: not reduced again
        return fake, FeatureStatistics.from_sums(int(self._real_count), self._real_sum, self._real_outer)

    def compute(self) -> dict[str, float | int]:
        """The FID of everything passed to :meth:`update` since the last :meth:`reset`.

        Raises:
            NotComputableError: fewer than 2 fake or real images were seen (on all ranks together).
            ValueError: under DDP, F is unknown on a rank that saw no batch (pass ``num_features``).
        """
        if not self._fake_sum.numel():
            if idist.get_world_size() > 1:
                raise ValueError(
                    "this rank saw no images and F is unknown, so it cannot join the all-reduce: pass num_features."
                )
            raise NotComputableError("FID must have at least 2 fake and 2 real images (update) before compute().")
        fake, real = self._reduced_statistics()
        if fake.count < 2 or real.count < 2:
            raise NotComputableError(
                f"FID must have at least 2 fake and 2 real images before compute(), got {fake.count} fake and "
                f"{real.count} real."
            )
        key = self.prefix + self.name
        return {
            key: frechet_distance(real.mean(), real.cov(), fake.mean(), fake.cov()),
            f"{key}_num_real": real.count,
            f"{key}_num_fake": fake.count,
        }


# ================================================================================================ PSNR/SSIM/LPIPS
def ms_ssim_min_size(kernel_size: int = 11, num_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest spatial side MONAI's ``MultiScaleSSIMMetric`` accepts.

    ``max(max(k, 2) * 2^(S-1), k * max(1, S-1)^2)`` for window ``k`` and ``S`` scales: the coarsest scale (the side
    halved S-1 times) must still hold one window (and survive the loop's final 2x pooling), and MONAI 1.6 checks
    ``side // (S-1)^2 >= k`` (its message says "larger than (k-1)(S-1)^2", one window short). For the default
    ``k = 11, S = 5``: 176.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be an integer >= 1, got {kernel_size!r}.")
    if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 1:
        raise ValueError(f"num_scales must be an integer >= 1, got {num_scales!r}.")
    return max(max(kernel_size, 2) * 2 ** (num_scales - 1), kernel_size * max(1, num_scales - 1) ** 2)


class LPIPSStatus(NamedTuple):
    """Whether LPIPS can be computed here, and why (not)."""

    available: bool
    reason: str


def lpips_status(net: str = "alex") -> LPIPSStatus:
    """Check, without importing torch models or touching the network, whether LPIPS can run offline.

    LPIPS (Zhang et al., CVPR 2018) needs the ``lpips`` package (with its linear-layer weights
    ``lpips/weights/v0.1/{net}.pth``), torchvision, and the ImageNet backbone weights in torch's hub cache
    (``$TORCH_HOME/hub/checkpoints``), which torchvision would otherwise download.

    Args:
        net: LPIPS backbone: ``"alex"`` (default, the paper's recommended metric), ``"vgg"`` or ``"squeeze"``.
    """
    if net not in _LPIPS_BACKBONES:
        raise ValueError(f"net must be one of {tuple(_LPIPS_BACKBONES)}, got {net!r}.")
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return LPIPSStatus(
            False, "unavailable: the `lpips` package is not installed (pip install lpips, with its weights local)"
        )
    linear = Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth"
    if not linear.is_file():
        return LPIPSStatus(False, f"unavailable: the LPIPS linear-layer weights {linear} are missing")
    if importlib.util.find_spec("torchvision") is None:
        return LPIPSStatus(False, "unavailable: torchvision (the LPIPS backbone) is not installed")
    import torchvision.models  # only reached when lpips is installed

    url = getattr(torchvision.models, _LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not backbone.is_file():
        return LPIPSStatus(
            False, f"unavailable: the {net} backbone weights {backbone} are missing (torchvision would download them)"
        )
    return LPIPSStatus(True, f"lpips net={net}, backbone {backbone.name}")


def _load_lpips(net: str, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The LPIPS network (call only after :func:`lpips_status` said it is available)."""
    import lpips

    model = lpips.LPIPS(net=net, verbose=False).eval().to(device)
    model.requires_grad_(False)
    return model


class ImageFidelity(Metric):
    """Mean per-image PSNR, SSIM, MS-SSIM and LPIPS of fake (reconstructed) vs real images over a whole set.

    Images come in [-1, 1], are clamped to it and mapped to [0, 1] (``(x + 1) / 2``) before MONAI's metrics run with
    ``data_range = 1``. For PSNR this is the same number as data range 2 on [-1, 1]; SSIM's luminance term
    ``(2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)`` is not shift-invariant and assumes non-negative intensities
    (Wang et al. 2004), so SSIM and MS-SSIM are computed on [0, 1] as is usual. Per image:

    - ``psnr = 10 log10(1 / MSE)`` (``monai.metrics.PSNRMetric``), ``inf`` for an exact copy, so the mean is
      ``inf`` when any image is reproduced exactly (no cap);
    - ``ssim``: Gaussian window ``win_size`` (11), sigma 1.5, ``k1 = 0.01``, ``k2 = 0.03``, mean over the SSIM map
      and channels (``monai.metrics.SSIMMetric``);
    - ``ms_ssim``: the same window on ``len(ms_ssim_weights)`` scales (``monai.metrics.MultiScaleSSIMMetric``),
      only when every spatial side is >= :func:`ms_ssim_min_size` (176 for the defaults);
    - ``lpips``: LPIPS distance (lower is better) on RGB (grayscale repeated), 2D only, when :func:`lpips_status`
      finds the package and weights.

    :meth:`compute` returns ``{prefix}psnr``, ``ssim``, ``ms_ssim``, ``lpips`` (floats, or None when not
    computable) and ``num_images``. Each None value comes with ``{prefix}{key}_note`` saying why (image too small,
    LPIPS unavailable); a metric that was not computed for every image is None, never a partial mean or 0.

    Args:
        spatial_dims: 2 or 3.
        output_transform: maps ``engine.state.output`` to ``(fake, real)``. Default identity.
        device: device of the accumulated sums. Default ``"cpu"``.
        prefix: prepended to every key. Default ``""``.
        win_size: SSIM window side. Default 11.
        kernel_sigma: SSIM Gaussian sigma. Default 1.5.
        ms_ssim_weights: one weight per MS-SSIM scale. Default :data:`MS_SSIM_WEIGHTS` (5 scales).
        lpips: compute LPIPS when available. Default True.
        lpips_net: LPIPS backbone, ``"alex"`` (default), ``"vgg"`` or ``"squeeze"``.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, ``win_size`` < 1, ``kernel_sigma`` <= 0, empty
            ``ms_ssim_weights``, or an unknown ``lpips_net``.
        TypeError: ``prefix`` is not a string.
    """

    required_output_keys = None

    def __init__(
        self,
        spatial_dims: int = 2,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
        prefix: str = "",
        win_size: int = 11,
        kernel_sigma: float = 1.5,
        ms_ssim_weights: Sequence[float] = MS_SSIM_WEIGHTS,
        lpips: bool = True,
        lpips_net: str = "alex",
    ) -> None:
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {type(prefix).__name__}.")
        if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1:
            raise ValueError(f"win_size must be an integer >= 1, got {win_size!r}.")
        if isinstance(kernel_sigma, bool) or not isinstance(kernel_sigma, (int, float)) or kernel_sigma <= 0:
            raise ValueError(f"kernel_sigma must be a number > 0, got {kernel_sigma!r}.")
        if not isinstance(ms_ssim_weights, Sequence) or len(ms_ssim_weights) < 1:
            raise ValueError(f"ms_ssim_weights must be a non-empty sequence of numbers, got {ms_ssim_weights!r}.")
        self.spatial_dims = spatial_dims
        self.prefix = prefix
        self.win_size = win_size
        self.ms_ssim_min_size = ms_ssim_min_size(win_size, len(ms_ssim_weights))
        self._psnr = PSNRMetric(max_val=1.0, reduction="none")
        self._ssim = SSIMMetric(
            spatial_dims, data_range=1.0, win_size=win_size, kernel_sigma=kernel_sigma, reduction="none"
        )
        self._ms_ssim = MultiScaleSSIMMetric(
            spatial_dims,
            data_range=1.0,
            kernel_size=win_size,
            kernel_sigma=kernel_sigma,
            weights=tuple(float(w) for w in ms_ssim_weights),
            reduction="none",
        )
        # LPIPS: decided once here (a file check); the network itself is loaded at the first update
        status = lpips_status(lpips_net)
        if not lpips:
            status = LPIPSStatus(False, "not requested (lpips=False)")
        elif spatial_dims != 2:
            status = LPIPSStatus(False, "not applicable: LPIPS is a 2D network and the images are 3D")
        self.lpips_status = status
        self.lpips_net = lpips_net
        self._lpips_model: Callable | None = None
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        """Zero the sums and counts."""
        zero = {"dtype": torch.float64, "device": self._device}
        self._num_images = torch.zeros((), **zero)
        self._psnr_sum = torch.zeros((), **zero)
        self._ssim_sum = torch.zeros((), **zero)
        self._ms_ssim_sum = torch.zeros((), **zero)
        self._lpips_sum = torch.zeros((), **zero)
        # images on which SSIM / MS-SSIM could not run, and the smallest side seen (for the note)
        self._ssim_skipped = torch.zeros((), **zero)
        self._ms_ssim_skipped = torch.zeros((), **zero)
        self._min_side = torch.full((), float("inf"), **zero)

    def _run(self, metric: Any, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        values = metric(y_pred=fake, y=real)  # (B, 1) per image
        metric.reset()  # MONAI's buffer would keep every value; only the sum is needed
        return values.detach().reshape(-1).to(device=self._device, dtype=torch.float64).sum()

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        """Add one batch.

        Args:
            output: ``(fake, real)`` or a mapping with ``"fake"`` and ``"real"``: ``(B, C, *spatial)`` floating
                tensors of the same shape in [-1, 1], ``len(spatial) == spatial_dims``.

        Raises:
            TypeError: ``output`` is not such a pair or holds non-floating tensors.
            ValueError: the shapes differ or do not have ``spatial_dims`` spatial axes.
        """
        # 1. validate
        fake, real = _pair(output, "ImageFidelity")
        fake, real = _check_images(fake, "fake"), _check_images(real, "real")
        if fake.shape != real.shape:
            raise ValueError(
                f"fake and real must have the same shape, got {tuple(fake.shape)} and {tuple(real.shape)}."
            )
        if fake.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"images must be (B, C, *spatial) with {self.spatial_dims} spatial axes (spatial_dims), got "
                f"{tuple(fake.shape)}."
            )
        # 2. [-1, 1] -> [0, 1] (clamped: decoders overshoot slightly, saved images are clamped too)
        x = (fake.float().clamp(-1, 1) + 1) / 2  # (B, C, *spatial)
        y = (real.float().clamp(-1, 1) + 1) / 2
        batch, side = x.shape[0], min(x.shape[2:])
        self._num_images += batch
        self._min_side = torch.minimum(
            self._min_side, torch.tensor(float(side), dtype=torch.float64, device=self._device)
        )
        # 3. per-image metrics, summed
        self._psnr_sum += self._run(self._psnr, x, y)
        if side >= self.win_size:
            self._ssim_sum += self._run(self._ssim, x, y)
        else:
            self._ssim_skipped += batch
        if side >= self.ms_ssim_min_size:
            self._ms_ssim_sum += self._run(self._ms_ssim, x, y)
        else:
            self._ms_ssim_skipped += batch
        if self.lpips_status.available:
            if self._lpips_model is None:
                self._lpips_model = _load_lpips(self.lpips_net, fake.device)
            rgb = [t.clamp(-1, 1).expand(-1, 3, -1, -1) if t.shape[1] == 1 else t.clamp(-1, 1) for t in (fake, real)]
            with torch.no_grad():
                distances = self._lpips_model(rgb[0].float(), rgb[1].float())  # (B, 1, 1, 1), inputs in [-1, 1]
            self._lpips_sum += distances.detach().reshape(-1).to(self._device, torch.float64).sum()

    @torch.no_grad()
    def iteration_completed(self, engine: Any) -> None:
        """Pass ``output_transform(engine.state.output)`` to :meth:`update` unchanged."""
        self.update(self._output_transform(engine.state.output))

    @sync_all_reduce(
        "_num_images",
        "_psnr_sum",
        "_ssim_sum",
        "_ms_ssim_sum",
        "_lpips_sum",
        "_ssim_skipped",
        "_ms_ssim_skipped",
        "_min_side:MIN",
    )
    def compute(self) -> dict[str, float | int | str | None]:
        """Means over every image since the last :meth:`reset` (all ranks), with notes for what is not computable.

        Raises:
            NotComputableError: no image was seen.
        """
        n = int(self._num_images)
        if n == 0:
            raise NotComputableError("ImageFidelity must have at least one image pair (update) before compute().")
        side = int(self._min_side)
        result: dict[str, float | int | str | None] = {"psnr": float(self._psnr_sum) / n}
        result["ssim"] = float(self._ssim_sum) / n if int(self._ssim_skipped) == 0 else None
        if result["ssim"] is None:
            result["ssim_note"] = (
                f"not applicable: SSIM needs every spatial side >= win_size = {self.win_size}, got a side of {side}"
            )
        result["ms_ssim"] = float(self._ms_ssim_sum) / n if int(self._ms_ssim_skipped) == 0 else None
        if result["ms_ssim"] is None:
            result["ms_ssim_note"] = (
                f"not applicable: MS-SSIM with {len(self._ms_ssim.weights)} scales and window {self.win_size} needs "
                f"every spatial side >= {self.ms_ssim_min_size}, got a side of {side}"
            )
        result["lpips"] = float(self._lpips_sum) / n if self.lpips_status.available else None
        if result["lpips"] is None:
            result["lpips_note"] = self.lpips_status.reason
        result["num_images"] = n
        return {self.prefix + key: value for key, value in result.items()}


def image_fidelity(
    pairs: Iterable[Any], spatial_dims: int = 2, lpips: bool = True
) -> dict[str, float | int | str | None]:
    """PSNR, SSIM, MS-SSIM and LPIPS over an iterable of ``(fake, real)`` batches; see :class:`ImageFidelity`.

    Args:
        pairs: iterable of ``(fake, real)`` pairs of ``(B, C, *spatial)`` images in [-1, 1].
        spatial_dims: 2 or 3. Default 2.
        lpips: compute LPIPS when available. Default True.

    Example:
        >>> images = torch.rand(2, 1, 32, 32) * 2 - 1
        >>> result = image_fidelity([(images, images)], lpips=False)
        >>> result["psnr"], result["ssim"], result["ms_ssim"]
        (inf, 1.0, None)
    """
    metric = ImageFidelity(spatial_dims, lpips=lpips)
    for pair in pairs:
        metric.update(pair)
    return metric.compute()
