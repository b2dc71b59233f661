"""Official train/test splits of UCF101 and HMDB51 (paper Sec. 4.1: "we use the provided evaluation
protocol and report the mean average accuracy over the three splits").

Two file formats are parsed, both exactly as distributed:

* UCF101 (also used by the synthetic set): ``classInd.txt`` with ``<1-based index> <Class>`` lines,
  ``trainlist0N.txt`` with ``<Class>/v_<Class>_gXX_cYY.avi <1-based label>`` lines and
  ``testlist0N.txt`` with the path only. The official files end lines with CRLF; both endings work.
* HMDB51: 153 files ``<class>_test_split{1,2,3}.txt`` with ``<video>.avi <0|1|2>`` lines (1 = train,
  2 = test, 0 = not used in this split; the official lines end with a space). The 51 classes are
  numbered in alphabetical order, as everybody does (the files themselves carry no index).

``split_dir`` may be the folder holding the files or its parent as unpacked from the official
archives (``ucfTrainTestlist/``, ``testTrainMulti_7030_splits/``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from twostream_lib.errors import ConfigError, DataError

DATASETS = ("ucf101", "hmdb51", "synthetic")

#: Official sizes of each split: (train videos, test videos), and the number of classes.
OFFICIAL_SPLIT_SIZES = {
    "ucf101": {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)},
    "hmdb51": {1: (3570, 1530), 2: (3570, 1530), 3: (3570, 1530)},
}
OFFICIAL_NUM_CLASSES = {"ucf101": 101, "hmdb51": 51}

# Sub-folders created by unpacking the official split archives.
_UNPACKED_SUBDIR = {"ucf": "ucfTrainTestlist", "hmdb": "testTrainMulti_7030_splits"}
_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")


@dataclass(frozen=True)
class VideoItem:
    """One video of a split."""

    name: str  # stem, e.g. "v_Basketball_g01_c01"
    label: int  # 0-based class index
    class_name: str  # e.g. "Basketball", "brush_hair"
    relpath: str  # video file relative to the video root, e.g. "Basketball/v_Basketball_g01_c01.avi"


@dataclass(frozen=True)
class Split:
    """One official train/test split of a data set."""

    dataset: str  # "ucf101" | "hmdb51" | "synthetic"
    split: int  # 1..3
    classes: tuple[str, ...]  # index = label
    train: tuple[VideoItem, ...]
    test: tuple[VideoItem, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_split(dataset: str, split_dir: str | Path, split: int) -> Split:
    """Parse official split ``split`` (1..3) of ``dataset`` from the files in ``split_dir``.

    Raises ConfigError for an unknown data set or split number, DataError for a missing folder or
    file, a malformed line (the message gives file and line number), an unknown class, a label that
    disagrees with the class folder, or a video listed twice.
    """
    dataset = _check_dataset(dataset)
    split = _check_split_number(split)
    root = Path(split_dir)
    if not root.is_dir():
        raise DataError(f"split folder {root} does not exist; expected the {dataset} split files there")
    if dataset == "hmdb51":
        classes, train, test = _load_hmdb51(_resolve_dir(root, "hmdb"), split)
    else:
        classes, train, test = _load_ucf_format(_resolve_dir(root, "ucf"), split)
    _check_disjoint(train, test, root, split)
    return Split(dataset=dataset, split=split, classes=classes, train=train, test=test)


# ---- argument checks ---------------------------------------------------------------------


def _check_dataset(dataset: str) -> str:
    name = str(dataset).lower()
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {dataset!r}; expected one of {list(DATASETS)}")
    return name


def _check_split_number(split: int) -> int:
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= 3:
        raise ConfigError(f"split must be 1, 2 or 3 (the official splits), got {split!r}")
    return split


def _resolve_dir(root: Path, kind: str) -> Path:
    """``root`` itself, or the official unpacked sub-folder when the files are not directly in root."""
    has_files = (root / "classInd.txt").exists() if kind == "ucf" else any(root.glob("*_test_split*.txt"))
    sub = root / _UNPACKED_SUBDIR[kind]
    return sub if not has_files and sub.is_dir() else root


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of ``path`` as (1-based line number, stripped text)."""
    if not path.is_file():
        raise DataError(f"split file {path} is missing")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"split file {path} is not UTF-8 text: {err}") from None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


# ---- UCF101 format -----------------------------------------------------------------------


def _load_ucf_format(root: Path, split: int):
    classes = _read_class_index(root / "classInd.txt")
    index = {name: i for i, name in enumerate(classes)}
    train = _read_ucf_list(root / f"trainlist0{split}.txt", index, classes)
    test = _read_ucf_list(root / f"testlist0{split}.txt", index, classes)
    return classes, train, test


def _read_class_index(path: Path) -> tuple[str, ...]:
    """``classInd.txt``: ``<index> <Class>`` lines, indices 1..K in order."""
    classes: list[str] = []
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{lineno}: expected '<index> <class name>', got {line!r}")
        if int(parts[0]) != len(classes) + 1:
            raise DataError(f"{path}:{lineno}: expected class index {len(classes) + 1}, got {parts[0]}")
        classes.append(parts[1])
    if not classes:
        raise DataError(f"{path} lists no classes")
    return tuple(classes)


def _read_ucf_list(path: Path, index: dict[str, int], classes: tuple[str, ...]) -> tuple[VideoItem, ...]:
    """``trainlist0N.txt`` (path and 1-based label) or ``testlist0N.txt`` (path only)."""
    items, seen = [], set()
    for lineno, line in _read_lines(path):
        parts = line.split()
        where = f"{path}:{lineno}"
        if len(parts) not in (1, 2) or (len(parts) == 2 and not parts[1].isdigit()):
            raise DataError(f"{where}: expected '<Class>/<video>.avi [label]', got {line!r}")
        rel = PurePosixPath(parts[0].replace("\\", "/"))
        if len(rel.parts) != 2:
            raise DataError(f"{where}: expected a path '<Class>/<video>.avi', got {parts[0]!r}")
        class_name = rel.parts[0]
        if class_name not in index:
            raise DataError(f"{where}: class {class_name!r} is not in classInd.txt")
        label = index[class_name]
        if len(parts) == 2 and int(parts[1]) != label + 1:
            raise DataError(
                f"{where}: label {parts[1]} disagrees with class {class_name!r} "
                f"(index {label + 1} in classInd.txt)"
            )
        if rel.stem in seen:
            raise DataError(f"{where}: video {rel.stem!r} is listed twice")
        seen.add(rel.stem)
        items.append(VideoItem(name=rel.stem, label=label, class_name=class_name, relpath=str(rel)))
    return tuple(items)


# ---- HMDB51 format -----------------------------------------------------------------------


def _load_hmdb51(root: Path, split: int):
    files = _hmdb_split_files(root, split)
    classes = tuple(sorted(files))
    train, test = [], []
    for label, class_name in enumerate(classes):
        for item, role in _read_hmdb_file(files[class_name], class_name, label):
            if role == 1:
                train.append(item)
            elif role == 2:
                test.append(item)
    return classes, tuple(train), tuple(test)


def _hmdb_split_files(root: Path, split: int) -> dict[str, Path]:
    files = {}
    for path in root.iterdir():
        m = _HMDB_FILE.match(path.name)
        if m and int(m["split"]) == split:
            files[m["cls"]] = path
    if not files:
        raise DataError(
            f"no HMDB51 split files '<class>_test_split{split}.txt' in {root}; "
            f"expected the unpacked test_train_splits.rar (testTrainMulti_7030_splits/)"
        )
    return files


def _read_hmdb_file(path: Path, class_name: str, label: int):
    """Lines ``<video>.avi <0|1|2>``: yields (item, role) with role 0 unused, 1 train, 2 test."""
    seen = set()
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2") or "/" in parts[0]:
            raise DataError(f"{path}:{lineno}: expected '<video>.avi <0|1|2>', got {line!r}")
        stem = PurePosixPath(parts[0]).stem
        if stem in seen:
            raise DataError(f"{path}:{lineno}: video {stem!r} is listed twice")
        seen.add(stem)
        item = VideoItem(name=stem, label=label, class_name=class_name, relpath=f"{class_name}/{parts[0]}")
        yield item, int(parts[1])


def _check_disjoint(train, test, root: Path, split: int) -> None:
    both = {v.name for v in train} & {v.name for v in test}
    if both:
        raise DataError(
            f"split {split} in {root} lists {len(both)} video(s) in both train and test, "
            f"e.g. {sorted(both)[0]!r}"
        )
