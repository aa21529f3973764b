"""Fréchet Inception Distance: feature extractors loaded offline, streaming feature statistics, the closed form.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS
2017, arXiv 1706.08500) fits a Gaussian to the features of each image set and measures

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

between them. r-FID compares real images with their reconstructions, g-FID real images with generated ones.

The default extractor is the TorchScript Inception-v3 of StyleGAN2-ADA (``inception-2015-12-05.pt``, a translation
of TensorFlow's ``inception-2015-12-05.tgz``, the network of the original FID code), also used by clean-fid; it needs
no torchvision. Nothing is downloaded: the file is loaded from a local path and a missing file stops with an error
that says where to get it. Any other TorchScript feature extractor (a domain model) can be used with
``kind="generic"``; :class:`ExtractorInfo` records which one produced a number.

Limitations: FID depends on the extractor, the input resolution and the number of images (it is biased upwards for
small sets), so only numbers computed with the same three are comparable (``docs/metrics.md``). Images are converted
as StyleGAN2-ADA does (uint8, the file's own bilinear resize to 299 px), not with clean-fid's PIL resize, so numbers
match StyleGAN2-ADA's protocol and differ slightly from clean-fid's ``mode="clean"``. :class:`FeatureStatistics`
sums raw moments in float64, which loses precision only when the features' mean is ~1e6 times their spread.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "EXTRACTOR_KINDS",
    "FID_EXTRACTOR_CONFIG_KEY",
    "INCEPTION_NAME",
    "INCEPTION_URL",
    "ExtractorInfo",
    "FIDResult",
    "FeatureExtractor",
    "FeatureStatistics",
    "default_extractor_dirs",
    "feature_statistics",
    "fid_from_batches",
    "frechet_distance",
    "load_feature_extractor",
]

INCEPTION_NAME = "inception-2015-12-05"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
#: the bundle config key that holds the extractor path (named in the missing-file error)
FID_EXTRACTOR_CONFIG_KEY = "fid_extractor_path"
#: ``inception-stylegan``: ``model(uint8 NCHW in [0, 255], return_features=True) -> (N, 2048)``;
#: ``generic``: ``model(float images) -> (N, F)``
EXTRACTOR_KINDS = ("inception-stylegan", "generic")
_INCEPTION_SIZE = 299  # the StyleGAN2-ADA file resizes every input to 299 x 299 itself
_INCEPTION_FEATURES = 2048  # pool3 features


def default_extractor_dirs() -> list[Path]:
    """Where :func:`load_feature_extractor` looks when ``path`` is None, in order.

    ``~/.cache/medvq`` and torch's hub checkpoint folder (``$TORCH_HOME/hub/checkpoints``); read at call time so that
    ``TORCH_HOME`` set later is honoured.
    """
    return [Path("~/.cache/medvq").expanduser(), Path(torch.hub.get_dir()) / "checkpoints"]


class ExtractorInfo(NamedTuple):
    """Which feature extractor produced a number; store it next to every FID.

    Attributes:
        file_name: base name of the TorchScript file, e.g. ``"inception-2015-12-05.pt"``.
        sha256: hex SHA-256 of the file's bytes (two files with the same name may differ).
        kind: one of :data:`EXTRACTOR_KINDS`.
        input_size: side length the images are resized to before feature extraction (299 for Inception), or None
            when they are passed at their own resolution.
    """

    file_name: str
    sha256: str
    kind: str
    input_size: int | None

    def describe(self) -> str:
        """One line for logs and tables: file name, the first 12 hex digits of the SHA-256, kind and input size."""
        size = f"{self.input_size} px" if self.input_size else "native resolution"
        return f"{self.file_name} (sha256 {self.sha256[:12]}, {self.kind}, {size})"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # 1 MiB blocks: the Inception file is ~95 MB
            digest.update(block)
    return digest.hexdigest()


class FeatureExtractor(torch.nn.Module):
    """A loaded TorchScript extractor behind one call convention: images in [-1, 1] in, ``(N, F)`` features out.

    Build it with :func:`load_feature_extractor`. The forward pass runs without gradients and:

    - clamps the images to [-1, 1] (decoders have no output activation and overshoot slightly; a saved image is
      clamped too);
    - ``kind="inception-stylegan"``: takes ``(N, C, H, W)`` with C = 1 (repeated to RGB) or 3, converts to uint8
      exactly as StyleGAN2-ADA does (``x * 127.5 + 128``, clamped, truncated) and calls
      ``model(images_uint8, return_features=True)``; the file resizes to 299 x 299 (bilinear) itself and returns
      the 2048-d pool3 features;
    - ``kind="generic"``: maps [-1, 1] linearly to ``input_range``, resizes every spatial side to ``resize_to``
      (bilinear in 2D, trilinear in 3D) when it is set, and calls ``model(x)``; channels are passed unchanged.

    Attributes:
        model: the TorchScript module (eval mode).
        info: the :class:`ExtractorInfo` of the file.
        num_features: F, known for Inception (2048), otherwise set by the first call.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        info: ExtractorInfo,
        input_range: tuple[float, float] = (-1.0, 1.0),
        resize_to: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.info = info
        self.input_range = input_range
        self.resize_to = resize_to
        self.num_features: int | None = _INCEPTION_FEATURES if info.kind == "inception-stylegan" else None

    @property
    def device(self) -> torch.device:
        """Device of the model's weights (images are moved there)."""
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to(self.device).clamp(-1.0, 1.0)
        if self.info.kind == "inception-stylegan":
            if x.ndim != 4 or x.shape[1] not in (1, 3):
                raise ValueError(
                    f"images for the Inception extractor must be (N, 1 or 3, H, W), got {tuple(images.shape)}: "
                    "3D volumes need a generic (3D) extractor, or pass 2D slices."
                )
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grayscale -> RGB, as StyleGAN2-ADA does
            return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)  # (N, 3, H, W) uint8, round to nearest
        lo, hi = self.input_range
        x = lo + (x + 1.0) * (0.5 * (hi - lo))  # [-1, 1] -> [lo, hi]
        if self.resize_to is not None:
            mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 2]
            x = F.interpolate(x, size=(self.resize_to,) * (x.ndim - 2), mode=mode, align_corners=False)
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a batch.

        Args:
            images: ``(N, C, *spatial)`` floating tensor in [-1, 1] (values outside are clamped).

        Returns:
            ``(N, F)`` features on the extractor's device.

        Raises:
            TypeError: ``images`` is not a floating tensor.
            ValueError: ``images`` has too few dimensions or the wrong channels for Inception, or the model does not
                return ``(N, F)``.
        """
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(
                f"images must be a floating tensor in [-1, 1], got {getattr(images, 'dtype', type(images).__name__)}."
            )
        if images.ndim < 3 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty (N, C, *spatial) batch, got {tuple(images.shape)}.")
        x = self._prepare(images)
        features = self.model(x, return_features=True) if self.info.kind == "inception-stylegan" else self.model(x)
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != images.shape[0]:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(
                f"feature extractor {self.info.file_name} must return (N, F) = ({images.shape[0]}, F) features, got "
                f"{shape}: pool spatial maps inside the TorchScript model (e.g. a global average pool)."
            )
        if self.num_features is None:
            self.num_features = features.shape[1]
        return features


def _resolve_extractor_file(path: str | Path | None, name: str) -> tuple[Path, list[Path]]:
    """The file to load, and every place that was tried (for the error message)."""
    file_name = name if name.endswith(".pt") else f"{name}.pt"
    if path is None:
        tried = [d / file_name for d in default_extractor_dirs()]
    else:
        path = Path(path).expanduser()
        tried = [path / file_name if path.is_dir() else path]
    for candidate in tried:
        if candidate.is_file():
            return candidate, tried
    return tried[0], tried


def _missing_file_error(tried: list[Path], name: str, kind: str) -> FileNotFoundError:
    where = ", ".join(str(p) for p in tried)
    if kind == "inception-stylegan":
        source = (
            f"It is the TorchScript Inception-v3 '{INCEPTION_NAME}.pt' of the StyleGAN2-ADA release ({INCEPTION_URL}), "
            "the same file clean-fid downloads; medvq never downloads it. Copy it to one of those paths on this "
            "machine"
        )
    else:
        source = f"It is your own TorchScript feature extractor '{name}'. Put the file there"
    return FileNotFoundError(
        f"FID feature extractor file not found (looked for {where}). {source}, or set the config key "
        f"`{FID_EXTRACTOR_CONFIG_KEY}` (the `path` argument of load_feature_extractor) to where it is."
    )


def load_feature_extractor(
    path: str | Path | None,
    name: str = INCEPTION_NAME,
    kind: str = "inception-stylegan",
    device: str | torch.device = "cpu",
    input_range: tuple[float, float] = (-1.0, 1.0),
    resize_to: int | None = None,
) -> FeatureExtractor:
    """Load a TorchScript feature extractor from a local file, offline.

    Args:
        path: the ``.pt`` file, or a folder holding ``{name}.pt``; None looks for ``{name}.pt`` in
            :func:`default_extractor_dirs` (``~/.cache/medvq``, then ``$TORCH_HOME/hub/checkpoints``). In a bundle
            config this is ``fid_extractor_path``.
        name: file stem looked for in a folder. Default ``"inception-2015-12-05"`` (the StyleGAN2-ADA Inception-v3).
        kind: call convention: ``"inception-stylegan"`` (default; ``model(uint8 NCHW, return_features=True)``,
            resizes to 299 itself, 2048 features) or ``"generic"`` (``model(float images) -> (N, F)``, e.g. a domain
            model; see ``input_range`` and ``resize_to``).
        device: where the weights are loaded (``torch.jit.load(map_location=device)``). Default ``"cpu"``.
        input_range: generic only: the value range the model expects; [-1, 1] images are mapped linearly onto it,
            e.g. ``(0.0, 1.0)``. Default ``(-1.0, 1.0)`` (unchanged).
        resize_to: generic only: resize every spatial side to this many pixels/voxels before the model (bilinear /
            trilinear); None (default) passes images at their own size.

    Returns:
        a :class:`FeatureExtractor`, with ``info`` (file name, SHA-256, kind, input size) recording its identity.

    Raises:
        FileNotFoundError: the file is missing; the message names the expected file, where it comes from and the
            config key ``fid_extractor_path``.
        ValueError: ``kind`` is unknown, ``input_range``/``resize_to`` are invalid or given for Inception, the file is
            not a TorchScript archive, or an ``inception-stylegan`` file has no ``return_features`` argument.
        TypeError: ``name`` is not a non-empty string.

    Example:
        >>> extractor = load_feature_extractor("/data/models/inception-2015-12-05.pt")  # doctest: +SKIP
        >>> extractor(torch.rand(4, 3, 256, 256) * 2 - 1).shape  # doctest: +SKIP
        torch.Size([4, 2048])
    """
    # 1. arguments
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string (the file stem, e.g. {INCEPTION_NAME!r}), got {name!r}.")
    if kind not in EXTRACTOR_KINDS:
        raise ValueError(f"kind must be one of {EXTRACTOR_KINDS}, got {kind!r}.")
    if (
        not isinstance(input_range, Sequence)
        or len(input_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in input_range)
        or not input_range[0] < input_range[1]
    ):
        raise ValueError(f"input_range must be a pair (low, high) of numbers with low < high, got {input_range!r}.")
    if resize_to is not None and (isinstance(resize_to, bool) or not isinstance(resize_to, int) or resize_to < 1):
        raise ValueError(f"resize_to must be an integer >= 1 or None, got {resize_to!r}.")
    if kind == "inception-stylegan" and (resize_to is not None or tuple(input_range) != (-1.0, 1.0)):
        raise ValueError(
            "resize_to and input_range apply to kind='generic' only: the Inception file takes uint8 images in "
            "[0, 255] and resizes them to 299 px itself."
        )
    # 2. the file
    file, tried = _resolve_extractor_file(path, name)
    if not file.is_file():
        raise _missing_file_error(tried, name, kind)
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates torch.jit, but TorchScript is the format the StyleGAN2-ADA file ships in
            # (torch.export cannot read it), so the warning is noise for every user of FID
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning
            )
            model = torch.jit.load(str(file), map_location=device)
    except RuntimeError as err:
        raise ValueError(
            f"{file} is not a TorchScript archive ({err.__class__.__name__}: {str(err).splitlines()[0]}). The FID "
            f"extractor must be a torch.jit file such as {INCEPTION_NAME}.pt (not StyleGAN's .pkl, not a state_dict)."
        ) from err
    # 3. the call convention matches the kind (cheap: read from the TorchScript schema, nothing is run)
    if kind == "inception-stylegan":
        arguments = [a.name for a in model.forward.schema.arguments]
        if "return_features" not in arguments:
            raise ValueError(
                f"{file.name} has forward({', '.join(arguments[1:])}) without a `return_features` argument, so it is "
                "not the StyleGAN2-ADA Inception file: load it with kind='generic'."
            )
    info = ExtractorInfo(
        file_name=file.name,
        sha256=_sha256(file),
        kind=kind,
        input_size=_INCEPTION_SIZE if kind == "inception-stylegan" else resize_to,
    )
    return FeatureExtractor(
        model, info, input_range=(float(input_range[0]), float(input_range[1])), resize_to=resize_to
    )


def _as_float64(value: Any, argument: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{argument} must be a tensor or a numpy array, got {type(value).__name__}.")
    # CPU float64: the result must not depend on the device, and two eigh of 2048 x 2048 take ~1 s once per evaluation
    return value.detach().to(device="cpu", dtype=torch.float64)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix; eigenvalues below 0 (rounding) are set to 0."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T  # V diag(sqrt(l)) V^T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})``. The trace of the square root is computed as
    ``sum_i sqrt(lambda_i)`` over the eigenvalues of the symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}``, which has the
    same eigenvalues as ``S1 S2``.

    Why not MONAI's ``compute_frechet_distance`` (``scipy.linalg.sqrtm`` of ``S1 S2``): sqrtm of a non-symmetric
    product returns complex noise and inf/nan for the singular covariances FID meets whenever there are fewer images
    than features (< 2048), which MONAI patches with an epsilon offset and a ``print``; the eigen route is exact for
    singular matrices, real by construction, and several times faster at 2048 x 2048. ``tests/metrics/test_fidelity``
    checks it against ``monai.metrics.FIDMetric``.

    Args:
        mu1: ``(F,)`` mean of the first set (tensor or numpy array).
        sigma1: ``(F, F)`` covariance of the first set (symmetric PSD).
        mu2: ``(F,)`` mean of the second set.
        sigma2: ``(F, F)`` covariance of the second set.

    Returns:
        the distance as a Python float, >= 0 (rounding below 0 is clipped to 0).

    Raises:
        TypeError: an argument is not a tensor or numpy array.
        ValueError: the shapes disagree, a value is not finite, or a covariance is not symmetric.

    Example:
        >>> frechet_distance(torch.zeros(2), torch.eye(2), torch.ones(2), 4 * torch.eye(2))  # 2 + 2 * (2 - 1)^2
        4.0
    """
    mu1, sigma1 = _as_float64(mu1, "mu1"), _as_float64(sigma1, "sigma1")
    mu2, sigma2 = _as_float64(mu2, "mu2"), _as_float64(sigma2, "sigma2")
    dim = mu1.shape[0] if mu1.ndim == 1 else -1
    if dim < 1 or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            "mu1, mu2 must be (F,) and sigma1, sigma2 (F, F) with the same F >= 1, got "
            f"{tuple(mu1.shape)}, {tuple(sigma1.shape)}, {tuple(mu2.shape)}, {tuple(sigma2.shape)}."
        )
    for argument, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not torch.isfinite(value).all():
            raise ValueError(f"{argument} has non-finite values.")
    for argument, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        # relative tolerance: covariances from float64 sums are symmetric to rounding, not exactly
        if float((sigma - sigma.T).abs().max()) > 1e-8 * max(float(sigma.abs().max()), 1.0):
            raise ValueError(f"{argument} must be a symmetric covariance matrix.")
    # eigh reads one triangle: symmetrise so that rounding in the other one is not ignored
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    root1 = _psd_sqrt(sigma1)  # S1^{1/2}
    middle = root1 @ sigma2 @ root1  # (F, F), symmetric PSD, same spectrum as S1 S2
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()  # Tr((S1 S2)^{1/2})
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)  # a squared distance: values below 0 are rounding (e.g. -1e-13 for FID(x, x))


class FeatureStatistics:
    """Streaming mean and covariance of ``(N, F)`` features: count, sum and sum of outer products in float64.

    ``mean = s / n`` and ``cov = (S - n mean mean^T) / (n - 1)`` (unbiased, as ``numpy.cov``), with ``n`` the number
    of rows, ``s = sum_i x_i`` and ``S = sum_i x_i x_i^T``. Images and features are never kept, so a whole dataset
    costs ``F^2`` doubles (32 MiB for F = 2048). Statistics of disjoint parts add up: :meth:`merge`, or an all-reduce
    of the three sums under DDP (see :class:`medvq.metrics.fidelity.FID`).

    Args:
        num_features: F. Default None: set by the first :meth:`update`.
        device: device of the sums. Default ``"cpu"``.

    Example:
        >>> stats = FeatureStatistics()
        >>> stats.update(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        >>> stats.count, stats.mean().tolist(), stats.cov().tolist()
        (2, [1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """

    def __init__(self, num_features: int | None = None, device: str | torch.device = "cpu") -> None:
        if num_features is not None and (
            isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1
        ):
            raise ValueError(f"num_features must be an integer >= 1 or None, got {num_features!r}.")
        self.device = torch.device(device)
        self.count = 0
        self.sum = torch.zeros(num_features or 0, dtype=torch.float64, device=self.device)  # (F,)
        self.outer = torch.zeros(num_features or 0, num_features or 0, dtype=torch.float64, device=self.device)

    @property
    def num_features(self) -> int | None:
        """F, or None before the first update."""
        return self.sum.numel() or None

    @classmethod
    def from_sums(cls, count: int, feature_sum: torch.Tensor, outer_sum: torch.Tensor) -> FeatureStatistics:
        """Statistics from already accumulated sums ``n``, ``(F,)`` and ``(F, F)`` (e.g. after an all-reduce)."""
        if feature_sum.ndim != 1 or outer_sum.shape != (feature_sum.numel(), feature_sum.numel()):
            raise ValueError(
                f"feature_sum must be (F,) and outer_sum (F, F), got {tuple(feature_sum.shape)} and "
                f"{tuple(outer_sum.shape)}."
            )
        stats = cls(device=feature_sum.device)
        stats.count = int(count)
        stats.sum = feature_sum.to(torch.float64).clone()
        stats.outer = outer_sum.to(torch.float64).clone()
        return stats

    @classmethod
    def from_features(cls, features: torch.Tensor) -> FeatureStatistics:
        """Statistics of one ``(N, F)`` block."""
        stats = cls(device=features.device if isinstance(features, torch.Tensor) else "cpu")
        stats.update(features)
        return stats

    def update(self, features: torch.Tensor) -> None:
        """Add ``(N, F)`` feature rows.

        Raises:
            TypeError: ``features`` is not a floating tensor.
            ValueError: ``features`` is not 2D, has non-finite values, or its F differs from earlier rows.
        """
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError(
                f"features must be a floating tensor, got {getattr(features, 'dtype', type(features).__name__)}."
            )
        if features.ndim != 2:
            raise ValueError(f"features must have shape (N, F), got {tuple(features.shape)}.")
        if self.num_features is not None and features.shape[1] != self.num_features:
            raise ValueError(f"features have F = {features.shape[1]} but earlier features had {self.num_features}.")
        x = features.detach().to(device=self.device, dtype=torch.float64)  # (N, F)
        if not torch.isfinite(x).all():
            raise ValueError("features have non-finite values (nan or inf): check the extractor's input.")
        if self.num_features is None:
            self.sum = x.new_zeros(x.shape[1])
            self.outer = x.new_zeros(x.shape[1], x.shape[1])
        self.count += x.shape[0]
        self.sum += x.sum(dim=0)
        self.outer += x.T @ x  # sum_i x_i x_i^T, (F, F)

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """New statistics of the union of both sets (neither operand changes)."""
        if not isinstance(other, FeatureStatistics):
            raise TypeError(f"other must be FeatureStatistics, got {type(other).__name__}.")
        if self.num_features is None or other.num_features is None:
            source = other if self.num_features is None else self
            return FeatureStatistics.from_sums(source.count, source.sum, source.outer)
        if other.num_features != self.num_features:
            raise ValueError(f"cannot merge statistics of F = {self.num_features} and F = {other.num_features}.")
        return FeatureStatistics.from_sums(
            self.count + other.count, self.sum + other.sum.to(self.device), self.outer + other.outer.to(self.device)
        )

    def mean(self) -> torch.Tensor:
        """``(F,)`` float64 mean. Raises ValueError when empty."""
        if self.count < 1:
            raise ValueError("FeatureStatistics is empty: update it with features before asking for the mean.")
        return self.sum / self.count

    def cov(self) -> torch.Tensor:
        """``(F, F)`` float64 unbiased covariance. Raises ValueError with fewer than 2 rows."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature rows, got {self.count}.")
        mean = self.sum / self.count
        return (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)


class FIDResult(NamedTuple):
    """FID of two image sets, with what is needed to compare it with another FID.

    Attributes:
        fid: the Fréchet distance of the two feature Gaussians.
        num_real: images in the first (real) set.
        num_fake: images in the second (reconstructed or generated) set.
        extractor: the extractor's identity, or None for a plain callable.
    """

    fid: float
    num_real: int
    num_fake: int
    extractor: ExtractorInfo | None


def feature_statistics(
    batches: Iterable[torch.Tensor], extractor: Callable[[torch.Tensor], torch.Tensor]
) -> FeatureStatistics:
    """Stream image batches through ``extractor`` into :class:`FeatureStatistics` (e.g. to cache real statistics).

    Args:
        batches: iterable of ``(B, C, *spatial)`` images in [-1, 1].
        extractor: a :class:`FeatureExtractor` or any callable mapping such a batch to ``(B, F)`` features.
    """
    stats = FeatureStatistics()
    with torch.no_grad():
        for images in batches:
            stats.update(extractor(images))
    return stats


def fid_from_batches(
    real_batches: Iterable[torch.Tensor] | FeatureStatistics,
    fake_batches: Iterable[torch.Tensor],
    extractor: Callable[[torch.Tensor], torch.Tensor],
) -> FIDResult:
    """FID between two streams of image batches: r-FID when ``fake_batches`` are reconstructions of the real images,
    g-FID when they are generated. Only feature statistics are kept.

    Args:
        real_batches: iterable of ``(B, C, *spatial)`` real images in [-1, 1], or their precomputed
            :class:`FeatureStatistics` (from :func:`feature_statistics` with the same extractor).
        fake_batches: iterable of reconstructed or generated images, same layout; the sets may differ in size.
        extractor: a :class:`FeatureExtractor` (its ``info`` goes into the result) or a callable to ``(B, F)``.

    Raises:
        ValueError: a set has fewer than 2 images, or the feature dimensions differ.
    """
    real = real_batches if isinstance(real_batches, FeatureStatistics) else feature_statistics(real_batches, extractor)
    fake = feature_statistics(fake_batches, extractor)
    if real.count < 2 or fake.count < 2:
        raise ValueError(f"FID needs at least 2 images in each set, got {real.count} real and {fake.count} fake.")
    if real.num_features != fake.num_features:
        raise ValueError(f"real features have F = {real.num_features} but fake features F = {fake.num_features}.")
    return FIDResult(
        fid=frechet_distance(real.mean(), real.cov(), fake.mean(), fake.cov()),
        num_real=real.count,
        num_fake=fake.count,
        extractor=getattr(extractor, "info", None),
    )
