"""Hand-crafted features for Table 6 (Feichtenhofer et al., CVPR 2016, Sec. 4.6): improved dense
trajectories (Wang & Schmid, ICCV 2013) with HOG/HOF/MBH descriptors, Fisher vectors (Perronnin et
al., ECCV 2010), a one-vs-rest linear SVM, and late fusion of its scores with the ConvNet's.

Modules: :mod:`.trajectories` (sampling, tracking, camera-motion compensation, pruning),
:mod:`.descriptors` (HOG, HOF, MBH from integral histograms), :mod:`.fisher` (PCA, GMM, Fisher
vectors, SVM), :mod:`.pipeline` (per-video cache, process pool, CLI, fusion).
"""
from .descriptors import DESCRIPTOR_TYPES, descriptor_dims
from .fisher import (
    DiagGMM,
    FisherEncoder,
    fisher_vector,
    fit_fisher_encoder,
    svm_scores,
    train_svm,
)
from .pipeline import (
    ExtractReport,
    cache_path,
    encode,
    extract_descriptors,
    extract_video,
    fit_encoder,
    idt_scores,
    late_fuse_idt,
    load_descriptors,
    read_video_frames,
    zscore_per_video,
)
from .trajectories import DTParams, Trajectories, extract_trajectories

__all__ = [
    "DESCRIPTOR_TYPES",
    "DTParams",
    "DiagGMM",
    "ExtractReport",
    "FisherEncoder",
    "Trajectories",
    "cache_path",
    "descriptor_dims",
    "encode",
    "extract_descriptors",
    "extract_trajectories",
    "extract_video",
    "fisher_vector",
    "fit_encoder",
    "fit_fisher_encoder",
    "idt_scores",
    "late_fuse_idt",
    "load_descriptors",
    "read_video_frames",
    "svm_scores",
    "train_svm",
    "zscore_per_video",
]
