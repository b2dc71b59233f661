"""Fisher vectors (Perronnin et al., ECCV 2010), PCA, GMM and the linear SVM of the IDT encoding."""
import math

import numpy as np
import pytest

from twostream_lib.errors import ConfigError, DataError
from twostream_lib.idt.descriptors import DESCRIPTOR_TYPES, descriptor_dims
from twostream_lib.idt.fisher import (
    DiagGMM,
    FisherEncoder,
    fisher_vector,
    fit_fisher_encoder,
    fit_gmm,
    fit_pca,
    svm_scores,
    train_svm,
)


def _known_gmm():
    return DiagGMM(weights=[0.5, 0.3, 0.2],
                   means=[[0.0, 0.0], [2.0, 1.0], [-1.0, 3.0]],
                   variances=[[1.0, 0.5], [0.3, 2.0], [1.5, 1.0]])


def _fisher_loop(x, w, mu, var):
    """The formulas of Sanchez et al. (IJCV 2013), Eq. 16-18, one descriptor and component at a time."""
    T, D = x.shape
    K = len(w)
    g_mu = np.zeros((K, D))
    g_sig = np.zeros((K, D))
    for t in range(T):
        dens = np.array([w[k] * np.prod([math.exp(-0.5 * (x[t, d] - mu[k, d]) ** 2 / var[k, d])
                                         / math.sqrt(2 * math.pi * var[k, d]) for d in range(D)])
                         for k in range(K)])
        gamma = dens / dens.sum()
        for k in range(K):
            for d in range(D):
                u = (x[t, d] - mu[k, d]) / math.sqrt(var[k, d])
                g_mu[k, d] += gamma[k] * u
                g_sig[k, d] += gamma[k] * (u * u - 1.0)
    for k in range(K):
        g_mu[k] /= T * math.sqrt(w[k])
        g_sig[k] /= T * math.sqrt(2 * w[k])
    return np.concatenate([g_mu.ravel(), g_sig.ravel()])


def test_fisher_vector_matches_direct_computation():
    gmm = _known_gmm()
    x = np.random.default_rng(0).normal(size=(7, 2)) * 1.5 + [0.5, 1.0]
    ref = _fisher_loop(x, gmm.weights, gmm.means, gmm.variances)
    raw = fisher_vector(x, gmm, normalise=False)
    assert raw.shape == (2 * 3 * 2,)
    np.testing.assert_allclose(raw, ref, rtol=1e-5, atol=1e-6)
    fv = fisher_vector(x, gmm)
    z = np.sign(ref) * np.sqrt(np.abs(ref))
    np.testing.assert_allclose(fv, z / np.linalg.norm(z), rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(fv) == pytest.approx(1.0, abs=1e-6)
    assert not np.any(fisher_vector(np.zeros((0, 2)), gmm))  # no trajectories -> zero vector
    with pytest.raises(DataError, match=r"\[T, 2\]"):
        fisher_vector(np.zeros((3, 5)), gmm)


def test_posteriors_match_sklearn_and_gmm_fit():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(5, 0.5, (100, 3))])
    gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(x)
    ours = DiagGMM(gm.weights_, gm.means_, gm.covariances_)
    np.testing.assert_allclose(ours.posteriors(x), gm.predict_proba(x), atol=1e-8)
    fitted = fit_gmm(x, 2, seed=0)
    assert sorted(np.round(fitted.weights, 1).tolist()) == [0.3, 0.7]
    with pytest.raises(DataError, match="positive"):
        DiagGMM([1.0], [[0.0]], [[0.0]])


def test_relation_to_scikit_image_fisher_vector():
    """The relation stated in ``fisher.py``'s docstring: scikit-image's ``learn_gmm`` fits our GMM,
    its ``fisher_vector`` has a weight block first and the variance block negated, and its
    ``improved`` L2 norm includes the weight block; after undoing both, it equals ours."""
    from skimage.feature import fisher_vector as sk_fisher_vector
    from skimage.feature import learn_gmm

    rng = np.random.default_rng(4)
    train = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(4, 0.5, (100, 3)),
                            rng.normal([0, 5, -3], 0.7, (100, 3))])
    K, D = 3, 3
    ours_gmm = fit_gmm(train, K, seed=0, max_iter=100)
    sk_gmm = learn_gmm(train, n_modes=K, gm_args={"covariance_type": "diag", "random_state": 0,
                                                  "max_iter": 100, "reg_covar": 1e-6})
    np.testing.assert_array_equal(sk_gmm.weights_, ours_gmm.weights)
    np.testing.assert_array_equal(sk_gmm.means_, ours_gmm.means)
    np.testing.assert_array_equal(sk_gmm.covariances_, ours_gmm.variances)

    x = rng.normal(1.0, 2.0, (40, D))
    sk_raw = sk_fisher_vector(x, sk_gmm)
    assert sk_raw.shape == (2 * K * D + K,)
    gamma = ours_gmm.posteriors(x)
    np.testing.assert_allclose(sk_raw[:K], (gamma.mean(0) - ours_gmm.weights) / np.sqrt(ours_gmm.weights),
                               atol=1e-10)  # the weight gradients, which we leave out
    mu_block, sigma_block = slice(K, K + K * D), slice(K + K * D, None)
    ours_raw = fisher_vector(x, ours_gmm, normalise=False)
    np.testing.assert_allclose(ours_raw, np.concatenate([sk_raw[mu_block], -sk_raw[sigma_block]]),
                               rtol=1e-5, atol=1e-7)
    sk_imp = sk_fisher_vector(x, sk_gmm, improved=True)
    v = np.concatenate([sk_imp[mu_block], -sk_imp[sigma_block]])
    ours = fisher_vector(x, ours_gmm)
    np.testing.assert_allclose(ours, v / np.linalg.norm(v), rtol=1e-5, atol=1e-7)
    # ... and they do differ: the weight block takes part of skimage's norm
    assert np.sum(sk_imp[:K] ** 2) > 1e-3
    assert np.abs(ours - np.concatenate([sk_imp[mu_block], -sk_imp[sigma_block]])).max() > 1e-4


def test_pca_halves_each_descriptor_and_encoder_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    dims = descriptor_dims()
    samples = {t: rng.random((300, d)).astype(np.float32) for t, d in dims.items()}
    enc = fit_fisher_encoder(samples, n_components=4, seed=0, max_iter=20)
    for t, d in dims.items():
        assert enc.pca_components[t].shape == (d // 2, d)
        assert enc.gmms[t].dim == d // 2 and enc.gmms[t].n_components == 4
    # 2 K (D/2) per type: K (30 + 96 + 108 + 96 + 96) = 4 * 426
    assert enc.dim == 4 * 426
    slices = enc.type_slices()
    assert [slices[t].stop - slices[t].start for t in DESCRIPTOR_TYPES] == [4 * d for d in dims.values()]
    video = {t: rng.random((50, d)) for t, d in dims.items()}
    v = enc.encode(video)
    assert v.shape == (enc.dim,)
    for t in DESCRIPTOR_TYPES:  # each type is power- and L2-normalised on its own
        assert np.linalg.norm(v[slices[t]]) == pytest.approx(1.0, abs=1e-5)
    path = enc.save(tmp_path / "enc.npz")
    np.testing.assert_allclose(FisherEncoder.load(path).encode(video), v, rtol=1e-6)
    with pytest.raises(DataError, match="Fisher encoder"):
        FisherEncoder.load(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="hog"):
        enc.encode({t: a for t, a in video.items() if t != "hog"})
    _, comps = fit_pca(samples["hog"], 48)
    np.testing.assert_allclose(comps @ comps.T, np.eye(48), atol=1e-8)
    # the same subspace and variances as scikit-learn's PCA
    from sklearn.decomposition import PCA

    ref = PCA(48, svd_solver="full").fit(samples["hog"].astype(np.float64))
    np.testing.assert_allclose(np.abs(comps @ ref.components_.T), np.eye(48), atol=1e-6)
    with pytest.raises(DataError, match="to fit 97 components"):
        fit_pca(samples["hog"], 97)
    with pytest.raises(ConfigError, match="unknown descriptor"):
        fit_fisher_encoder(samples, types=("sift",))


def test_svm_separates_toy_features_and_scores_layout():
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 3, (3, 10))
    y = np.repeat([0, 1, 3], 20)  # class 2 has no training video
    x = centres[np.repeat([0, 1, 2], 20)] + rng.normal(0, 0.3, (60, 10))
    svm = train_svm(x, y, C=100)
    s = svm_scores(svm, x, num_classes=4)
    assert s.shape == (60, 4)
    assert (s.argmax(1) == y).all()
    assert (s[:, 2] < s[:, [0, 1, 3]].min(axis=1)).all()  # the untrained class never wins
    binary = train_svm(x[:40], y[:40])
    sb = svm_scores(binary, x[:40])
    assert sb.shape == (40, 2) and (sb.argmax(1) == y[:40]).all()
    with pytest.raises(DataError, match="two classes"):
        train_svm(x[:20], y[:20])
    with pytest.raises(ConfigError, match="num_classes"):
        svm_scores(svm, x, num_classes=3)
