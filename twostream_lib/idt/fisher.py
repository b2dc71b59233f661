"""Fisher-vector encoding of IDT descriptors and the one-vs-rest linear SVM.

Encoding as in Wang & Schmid, "Action recognition with improved trajectories", ICCV 2013, Sec. 4:
for each descriptor type separately (trajectory shape, HOG, HOF, MBHx, MBHy), PCA to half its
dimension, a Gaussian mixture with diagonal covariances (256 components) fitted on a random sample
of training descriptors (256,000 in the paper), and the *improved* Fisher vector of Perronnin,
Sanchez, Mensink, "Improving the Fisher kernel for large-scale image classification", ECCV 2010
(formulas as in Sanchez, Perronnin, Mensink, Verbeek, IJCV 2013, Sec. 2-3): for descriptors
x_1..x_T, posteriors gamma_t(k), weights w_k, means mu_k, standard deviations sigma_k,

    G_mu_k    = 1 / (T sqrt(w_k))   * sum_t gamma_t(k) (x_t - mu_k) / sigma_k
    G_sigma_k = 1 / (T sqrt(2 w_k)) * sum_t gamma_t(k) [(x_t - mu_k)^2 / sigma_k^2 - 1]

(the gradients of the log-likelihood w.r.t. mu and sigma, normalised by the diagonal closed-form
approximation of the Fisher information matrix), stacked as ``[G_mu_1..G_mu_K, G_sigma_1..G_sigma_K]``
(2 K D values), then power normalisation ``sign(z) sqrt(|z|)`` and L2 normalisation. The five
per-type vectors are concatenated; a one-vs-rest linear SVM (C = 100) gives per-video class scores,
which the Fusion paper averages with its ConvNet's pre-softmax predictions (Feichtenhofer et al.,
CVPR 2016, Sec. 4.6, Table 6).

Everything the encoder needs at test time is plain arrays (saved with ``np.savez``, no pickle);
scikit-learn fits the GMM; PCA and the posteriors are computed here in NumPy.

Why not scikit-image's ``skimage.feature.fisher_vector`` / ``learn_gmm`` (compared with 0.26.0,
whose code is unchanged since 0.21; ``tests/test_idt_fisher.py`` checks the relation below):

* ``learn_gmm(x, n_modes=K, gm_args={"covariance_type": "diag", "random_state": seed,
  "max_iter": ..., "reg_covar": 1e-6})`` is the same ``GaussianMixture`` fit as :func:`fit_gmm`
  (weights, means and variances equal to the last bit). It adds nothing over calling scikit-learn,
  and ``gm_args`` without ``"covariance_type"`` raises ``KeyError``, ``n_modes`` must be a Python int.
* ``fisher_vector(x, gmm)`` gives a different vector:
  (1) ``2 K D + K`` values: the K gradients w.r.t. the mixture weights,
  ``(mean_t gamma_t(k) - w_k) / sqrt(w_k)``, come first; Wang & Schmid use the ``2 K D`` mean and
  variance gradients only.
  (2) Its variance block is ``-G_sigma`` (the gradient's sign is flipped); its mean block is ``G_mu``.
  The flip alone would not change a linear SVM (inner products are kept); (1) and (3) do.
  (3) ``improved=True`` L2-normalises over all ``2 K D + K`` values, so the weight block takes part
  of the norm: 8.7 % of the squared norm on the 3-component example of the tests, 1.8-2.1 % for
  K = 64 or 256 on uniform random 48-dim data. Its mean/variance entries, sign fixed, are ours
  times 0.956 (toy) or about 0.99 (largest entry difference 0.019, and 2-3e-4); taken as they come
  (sign not fixed) they differ from ours by up to 0.79 (toy), 0.065 (K = 64) and 0.038 (K = 256).
  Exactly: ``ours_raw = [sk_raw[K:K+KD], -sk_raw[K+KD:]]`` (to float32 rounding, 3e-8 relative)
  and ``ours = v / |v|`` with ``v = [sk_imp[K:K+KD], -sk_imp[K+KD:]]`` (max difference 1e-9).
  (4) It needs a fitted scikit-learn ``GaussianMixture`` (ours reloads plain arrays), raises on a
  video without trajectories (ours: the zero vector) and returns float64.
  (5) It is not faster: 1.4-2.8x slower single-threaded (K = 256, D = 48, T = 5000: 43 ms vs 29 ms;
  K = 256, D = 54, T = 20000: 249 ms vs 173 ms; K = 4, T = 300: 0.31 ms vs 0.11 ms), 1.0-5x
  slower on two threads (noisy); its posteriors come from ``predict_proba``, the same as ours.
Converting its output to ours would take more code than computing ours, so ours is kept.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.files import atomic_write

from .descriptors import DESCRIPTOR_TYPES

__all__ = [
    "DiagGMM",
    "FisherEncoder",
    "fisher_vector",
    "fit_fisher_encoder",
    "fit_gmm",
    "fit_pca",
    "svm_scores",
    "train_svm",
]


@dataclass
class DiagGMM:
    """A Gaussian mixture with diagonal covariances: ``weights [K]``, ``means [K, D]``, ``variances [K, D]``."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, np.float64)
        self.means = np.asarray(self.means, np.float64)
        self.variances = np.asarray(self.variances, np.float64)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.variances.shape != (k, d):
            raise DataError(f"DiagGMM: expected weights [{k}] and variances [{k}, {d}], got "
                            f"{list(self.weights.shape)} and {list(self.variances.shape)}")
        if (self.variances <= 0).any() or (self.weights <= 0).any():
            raise DataError("DiagGMM: weights and variances must be positive")

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def log_joint(self, x: np.ndarray) -> np.ndarray:
        """``log w_k + log N(x_t; mu_k, diag(var_k))`` for every descriptor and component, ``[T, K]``."""
        x = np.asarray(x, np.float64)
        prec = 1.0 / self.variances
        # sum_d (x - mu)^2 / var = x^2 . prec - 2 x . (mu prec) + sum mu^2 prec
        maha = (x * x) @ prec.T - 2.0 * x @ (self.means * prec).T + (self.means ** 2 * prec).sum(1)
        log_det = np.log(self.variances).sum(1)
        return np.log(self.weights) - 0.5 * (self.dim * np.log(2 * np.pi) + log_det + maha)

    def posteriors(self, x: np.ndarray) -> np.ndarray:
        """Soft assignments gamma_t(k) ``[T, K]`` (rows sum to 1)."""
        lj = self.log_joint(x)
        lj -= lj.max(axis=1, keepdims=True)
        p = np.exp(lj)
        p /= p.sum(axis=1, keepdims=True)
        return p


def fisher_vector(x: np.ndarray, gmm: DiagGMM, *, normalise: bool = True) -> np.ndarray:
    """Fisher vector ``[2 K D]`` of descriptors ``x [T, D]`` (Perronnin et al., ECCV 2010).

    Layout ``[G_mu (K x D), G_sigma (K x D)]``; with ``normalise`` the power (signed square root) and
    L2 normalisations of the improved Fisher vector are applied. A video without descriptors
    (``T = 0``) gives the zero vector.
    """
    x = np.asarray(x, np.float64)
    K, D = gmm.n_components, gmm.dim
    if x.ndim != 2 or x.shape[1] != D:
        raise DataError(f"fisher_vector: expected descriptors [T, {D}], got {list(x.shape)}")
    T = x.shape[0]
    if T == 0:
        return np.zeros(2 * K * D, np.float32)
    g = gmm.posteriors(x)  # [T, K]
    s0 = g.sum(0)  # [K]
    s1 = g.T @ x  # [K, D]
    s2 = g.T @ (x * x)  # [K, D]
    mu, var = gmm.means, gmm.variances
    sigma = np.sqrt(var)
    w = gmm.weights[:, None]
    g_mu = (s1 - s0[:, None] * mu) / (sigma * T * np.sqrt(w))
    g_sig = ((s2 - 2.0 * mu * s1 + s0[:, None] * mu * mu) / var - s0[:, None]) / (T * np.sqrt(2.0 * w))
    fv = np.concatenate([g_mu.ravel(), g_sig.ravel()])
    if normalise:
        fv = np.sign(fv) * np.sqrt(np.abs(fv))
        n = np.linalg.norm(fv)
        if n > 0:
            fv /= n
    return fv.astype(np.float32)


def fit_pca(x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA fitted on ``x [n, D]``: ``(mean [D], components [n_components, D])``.

    Eigenvectors of the sample covariance (a D x D matrix, D <= 108 here), largest eigenvalue first,
    each signed so that its largest-magnitude entry is positive (deterministic). Project with
    ``(x - mean) @ components.T`` (no whitening).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < max(n_components, 2) or not 1 <= n_components <= x.shape[1]:
        raise DataError(f"fit_pca: need descriptors [n, D] with n >= {max(n_components, 2)} and "
                        f"D >= {n_components} to fit {n_components} components, got {list(x.shape)}")
    mean = x.mean(axis=0)
    xc = x - mean
    _, evecs = np.linalg.eigh(xc.T @ xc / (len(x) - 1))
    comps = evecs[:, ::-1][:, :n_components].T
    signs = np.sign(comps[np.arange(n_components), np.abs(comps).argmax(axis=1)])
    return mean, comps * signs[:, None]


def fit_gmm(x: np.ndarray, n_components: int, *, seed: int = 0, max_iter: int = 100,
            reg_covar: float = 1e-6) -> DiagGMM:
    """Diagonal-covariance GMM fitted by EM (scikit-learn ``GaussianMixture(covariance_type="diag")``).

    The same fit as scikit-image's ``learn_gmm`` with ``gm_args`` ``covariance_type="diag"``,
    ``random_state=seed``, ``max_iter`` and ``reg_covar`` (see the module docstring).
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < n_components:
        raise DataError(f"fit_gmm: need at least {n_components} descriptors to fit {n_components} "
                        f"components, got {list(x.shape)}")
    gm = GaussianMixture(n_components=n_components, covariance_type="diag", max_iter=max_iter,
                         reg_covar=reg_covar, random_state=seed).fit(x)
    return DiagGMM(gm.weights_, gm.means_, gm.covariances_)


@dataclass
class FisherEncoder:
    """Per descriptor type: PCA (``mean``, ``components``) and a :class:`DiagGMM`.

    ``encode(descriptors)`` maps one video's ``{type: [n, dim]}`` to the concatenation of the
    per-type improved Fisher vectors, in the order of ``types``.
    """

    types: tuple[str, ...]
    pca_mean: dict[str, np.ndarray]
    pca_components: dict[str, np.ndarray]
    gmms: dict[str, DiagGMM]

    @property
    def dim(self) -> int:
        return sum(2 * g.n_components * g.dim for g in (self.gmms[t] for t in self.types))

    def type_slices(self) -> dict[str, slice]:
        """Where each descriptor type's Fisher vector sits in the encoded vector."""
        out, start = {}, 0
        for t in self.types:
            n = 2 * self.gmms[t].n_components * self.gmms[t].dim
            out[t] = slice(start, start + n)
            start += n
        return out

    def project(self, kind: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        d = self.pca_components[kind].shape[1]
        if x.ndim != 2 or x.shape[1] != d:
            raise DataError(f"FisherEncoder: {kind} descriptors must be [n, {d}], got {list(x.shape)}")
        return (x - self.pca_mean[kind]) @ self.pca_components[kind].T

    def encode(self, descriptors: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [t for t in self.types if t not in descriptors]
        if missing:
            raise DataError(f"FisherEncoder.encode: descriptor types {missing} missing (have {sorted(descriptors)})")
        return np.concatenate([fisher_vector(self.project(t, descriptors[t]), self.gmms[t])
                               for t in self.types])

    def save(self, path: str | Path) -> Path:
        """Write the encoder as a plain ``.npz`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"types": np.asarray(json.dumps(list(self.types)))}
        for t in self.types:
            arrays[f"{t}/pca_mean"] = self.pca_mean[t]
            arrays[f"{t}/pca_components"] = self.pca_components[t]
            arrays[f"{t}/weights"] = self.gmms[t].weights
            arrays[f"{t}/means"] = self.gmms[t].means
            arrays[f"{t}/variances"] = self.gmms[t].variances
        return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> FisherEncoder:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such Fisher encoder file")
        try:
            with np.load(path, allow_pickle=False) as z:
                types = tuple(json.loads(str(z["types"])))
                return cls(types, {t: z[f"{t}/pca_mean"] for t in types},
                           {t: z[f"{t}/pca_components"] for t in types},
                           {t: DiagGMM(z[f"{t}/weights"], z[f"{t}/means"], z[f"{t}/variances"]) for t in types})
        except (KeyError, ValueError, OSError) as e:
            raise DataError(f"{path}: not a Fisher encoder written by FisherEncoder.save ({e})") from e


def fit_fisher_encoder(samples: Mapping[str, np.ndarray], *, n_components: int = 256,
                       pca_fraction: float = 0.5, types: Sequence[str] = DESCRIPTOR_TYPES,
                       seed: int = 0, max_iter: int = 100) -> FisherEncoder:
    """Fit PCA (to ``pca_fraction`` of each type's dimension) and a diagonal GMM per descriptor type.

    ``samples[type]`` is a ``[n, dim]`` sample of training descriptors (Wang & Schmid sample 256,000
    per type); :func:`twostream_lib.idt.pipeline.fit_encoder` draws it from the descriptor cache.
    """
    if not 0.0 < pca_fraction <= 1.0:
        raise ConfigError(f"pca_fraction must be in (0, 1], got {pca_fraction}")
    if n_components < 1:
        raise ConfigError(f"n_components must be >= 1, got {n_components}")
    unknown = [t for t in types if t not in DESCRIPTOR_TYPES]
    if unknown:
        raise ConfigError(f"unknown descriptor types {unknown}; expected some of {DESCRIPTOR_TYPES}")
    means, comps, gmms = {}, {}, {}
    for i, t in enumerate(types):
        if t not in samples:
            raise DataError(f"fit_fisher_encoder: no {t} descriptors in the training sample")
        x = np.asarray(samples[t], np.float64)
        d = max(1, round(x.shape[1] * pca_fraction))
        means[t], comps[t] = fit_pca(x, d)
        gmms[t] = fit_gmm((x - means[t]) @ comps[t].T, n_components, seed=seed + i, max_iter=max_iter)
    return FisherEncoder(tuple(types), means, comps, gmms)


# ----------------------------------------------------------------------------- SVM

def train_svm(features: np.ndarray, labels: np.ndarray, *, C: float = 100.0, seed: int = 0,
              max_iter: int = 10000):
    """One-vs-rest linear SVM (scikit-learn ``LinearSVC``, squared hinge) on encoded videos.

    C = 100 as in Wang & Schmid (ICCV 2013). Returns the fitted estimator; its ``classes_`` are the
    labels seen in training.
    """
    from sklearn.svm import LinearSVC

    x = np.asarray(features, np.float32)
    y = np.asarray(labels, np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise DataError(f"train_svm: expected features [N, D] and labels [N], got {list(x.shape)} and {list(y.shape)}")
    if len(np.unique(y)) < 2:
        raise DataError(f"train_svm: need at least two classes, got labels {np.unique(y).tolist()}")
    if C <= 0:
        raise ConfigError(f"train_svm: C must be > 0, got {C}")
    return LinearSVC(C=C, dual="auto", max_iter=max_iter, random_state=seed).fit(x, y)


def svm_scores(model, features: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Per-video decision values ``[N, num_classes]`` of a model from :func:`train_svm`.

    Column c is class c's one-vs-rest SVM score. A class absent from training gets, for every
    video, the lowest score the video has for any trained class minus 1 (it can never win).
    """
    x = np.asarray(features, np.float32)
    classes = np.asarray(model.classes_, np.int64)
    c = int(num_classes if num_classes is not None else classes.max() + 1)
    if classes.max() >= c:
        raise ConfigError(f"svm_scores: num_classes={c} but the SVM was trained on label {classes.max()}")
    dec = model.decision_function(x)
    if dec.ndim == 1:  # binary problem: sklearn returns the score of classes_[1]
        dec = np.stack([-dec, dec], axis=1)
    out = np.empty((x.shape[0], c), np.float32)
    out[:] = (dec.min(axis=1) - 1.0)[:, None]
    out[:, classes] = dec
    return out
