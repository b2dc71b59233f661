"""The plotting helpers: the colour-wheel flow coding against its definition and torchvision's, and the
figure helpers' shapes (a Figure with the expected axes), on small made-up inputs (no trained model)."""
import colorsys
from itertools import pairwise

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from twostream_lib import plots
from twostream_lib.data.prepare import flow_to_uint8
from twostream_lib.data.synthetic import CLASS_NAMES, class_families
from twostream_lib.evaluate import VideoScores


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def hue_of(rgb) -> float:
    """Hue in degrees of an RGB triple (0..255)."""
    return 360.0 * colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))[0]


def colour(u: float, v: float, top: float = 1.0) -> np.ndarray:
    return plots.flow_to_colour(np.array([[u]]), np.array([[v]]), max_magnitude=top)[0, 0]


# ----------------------------------------------------------------------------- flow_to_colour


@pytest.mark.parametrize("u, v, hue_range, name", [
    (1, 0, (350, 370), "right: red"),
    (0, 1, (45, 65), "down (v grows downwards): yellow"),
    (-1, 0, (185, 200), "left: cyan"),
    (0, -1, (250, 270), "up: blue-violet"),
])
def test_direction_sets_the_hue(u, v, hue_range, name):
    hue = hue_of(colour(u, v))
    hue = hue + 360 if hue < 180 and hue_range[0] > 300 else hue  # red wraps around 0
    assert hue_range[0] <= hue <= hue_range[1], f"{name}: hue {hue:.0f}"


def test_the_four_axis_directions_have_four_distinct_hues():
    hues = [hue_of(colour(u, v)) for u, v in ((1, 0), (0, 1), (-1, 0), (0, -1))]
    gaps = np.diff(sorted(hues + [hues[0] + 360]))
    assert gaps.min() > 40, hues


def test_zero_flow_is_white_and_magnitude_sets_the_saturation():
    assert colour(0, 0).tolist() == [255, 255, 255]
    sat = [colorsys.rgb_to_hsv(*(colour(m, 0) / 255))[1] for m in (0.0, 0.25, 0.5, 1.0)]
    assert sat[0] == 0 and all(a < b for a, b in pairwise(sat)) and sat[-1] == pytest.approx(1.0)
    assert colour(2, 0).max() < 255  # beyond max_magnitude: darker, not more saturated


def test_no_motion_anywhere_gives_a_white_image_without_dividing_by_zero():
    img = plots.flow_to_colour(np.zeros((4, 5)), np.zeros((4, 5)))
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8 and (img == 255).all()


def test_output_shape_dtype_and_scale_by_the_largest_displacement():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 7, 9)) * 3
    img = plots.flow_to_colour(u, v)
    assert img.shape == (7, 9, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, plots.flow_to_colour(u, v, max_magnitude=float(np.hypot(u, v).max())))
    np.testing.assert_array_equal(plots.flow_to_colour(2 * u, 2 * v), img)  # only relative magnitude counts


def test_matches_torchvision_flow_to_image():
    from torchvision.utils import flow_to_image

    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(2, 16, 16)) * 4
    ref = flow_to_image(torch.tensor(np.stack([u, v]), dtype=torch.float32)).permute(1, 2, 0).numpy()
    assert np.abs(ref.astype(int) - plots.flow_to_colour(u, v).astype(int)).max() <= 1


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        plots.flow_to_colour(np.zeros((2, 2)), np.zeros((2, 3)))


def test_colour_wheel_legend_is_white_outside_the_disc_and_red_at_the_right_rim():
    wheel = plots.colour_wheel(33)
    assert wheel.shape == (33, 33, 3) and wheel.dtype == np.uint8
    assert (wheel[0, 0] == 255).all() and (wheel[16, 16] == 255).all()  # corner: outside; centre: no motion
    rim = hue_of(wheel[16, 32])  # right of the centre: motion to the right
    assert rim < 15 or rim > 345


def test_stored_flow_reads_128_as_no_motion():
    q = flow_to_uint8(np.array([-20.0, -3.0, 0.0, 3.0, 20.0]))
    px = plots.stored_flow(q)
    assert px[2] == 0.0 and px[0] < -19.5 and px[-1] > 19.5
    np.testing.assert_allclose(px[[1, 3]], [-3.0, 3.0], atol=40 / 255)


# ----------------------------------------------------------------------------- figures of clips


def stored_clip(n=3, size=12):
    """n RGB frames and their stored flow: one square moving right by 2 px per frame."""
    rgb = np.zeros((n, size, size, 3), np.uint8)
    flow = np.zeros((n, size, size, 2), np.float32)
    flow[:, 4:8, 4:8, 0] = 2.0
    return rgb, flow_to_uint8(flow)


def test_clip_figure_has_four_rows_and_a_legend():
    rgb, flow = stored_clip(n=3)
    fig = plots.clip_figure(rgb, flow, title="clip")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 4 * 3 + 1
    colour_row = fig.axes[9].get_images()[0].get_array()
    assert hue_of(colour_row[5, 5]) > 340 or hue_of(colour_row[5, 5]) < 15  # moving right: red
    assert (np.asarray(colour_row[0, 0]) == 255).all()  # still: white


def maps(channels=8, size=6, layers=("relu1", "relu2")):
    rng = np.random.default_rng(0)
    return {name: rng.random((channels, size, size)).astype(np.float32) for name in layers}


def test_figure1_without_and_with_the_flow_row():
    rgb, flow = stored_clip(n=1)
    old = plots.figure1(maps(), maps(), rgb=rgb[0], flow_u=flow[0, ..., 0], channels=4)
    assert len(old.axes) == 2 * 2 * (4 + 1)
    new = plots.figure1(maps(), maps(), rgb=rgb[0], flow_u=flow[0, ..., 0], flow_v=flow[0, ..., 1], channels=4,
                        title="t")
    assert len(new.axes) == (2 * 2 + 1) * (4 + 1)
    assert [ax.get_title() for ax in new.axes[:4]] == ["RGB", "flow u", "flow v", "flow (colour)"]


def test_show_returns_a_png_and_closes_the_figure():
    fig, _ = plt.subplots()
    image = plots.show(fig)
    assert image.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


# ----------------------------------------------------------------------------- figures of tables


def test_maps_figure_one_panel_per_channel():
    fig = plots.maps_figure({"a": torch.ones(1, 2, 3, 3), "b": np.zeros((3, 3)), "c": np.zeros((1, 4, 2))})
    assert len(fig.axes) == 2 + 1 + 1
    assert [ax.get_title() for ax in fig.axes] == ["a[0]", "a[1]", "b", "c"]


def table_frame():
    """A table's frame as registry.run_table builds it: two rows, per-family columns, a paper-only row."""
    rows = [{"key": "late", "ran": "Late", "ours_acc": 50.0, "ours_stderr": 3.0, "family": "late fusion",
             "chance": 7.1, "ceiling": 50.0, "family:motion": 80.0, "family_ceiling:motion": 100.0,
             "family:order": 50.0, "family_ceiling:order": 50.0},
            {"key": "conv", "ran": "Conv", "ours_acc": 90.0, "ours_stderr": 2.0, "family": "2D conv fusion",
             "chance": 7.1, "ceiling": 92.9, "family:motion": 95.0, "family_ceiling:motion": 100.0,
             "family:order": 52.0, "family_ceiling:order": 50.0},
            {"key": "paper-only", "ran": None, "ours_acc": np.nan, "ours_stderr": np.nan}]
    return pd.DataFrame(rows)


def test_family_frame_and_figure():
    long = plots.family_frame(table_frame())
    assert len(long) == 2 * 2 and set(long["class family"]) == {"motion", "order"}
    assert long.set_index(["key", "class family"]).loc[("conv", "order"), "ceiling"] == 50.0
    fig = plots.family_figure(table_frame(), ["conv", "late"])
    assert len(fig.axes) == 1 and len(fig.axes[0].containers) == 2


def test_family_figure_on_a_table_without_families_shows_all_classes():
    frame = table_frame().drop(columns=[c for c in table_frame() if c.startswith("family")])
    long = plots.family_frame(frame)
    assert list(long["class family"]) == ["all classes"] * 2
    assert len(plots.family_figure(frame).axes) == 1


def test_accuracy_figure():
    fig = plots.accuracy_figure(table_frame())
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["late", "conv"]


def test_training_curves_read_from_run_folders(tmp_path):
    lines = []
    for key, seed in (("conv", 0), ("conv", 1), ("sum", 0)):
        folder = tmp_path / f"{key}-{seed}"
        folder.mkdir()
        pd.DataFrame({"epoch": [1, 2, 3], "lr": 0.1, "train_loss": [2.0, 1.0, 0.5],
                      "train_acc": [0.3, 0.6, 0.9], "val_acc": np.nan, "time": 0.1}).to_csv(folder / "metrics.csv",
                                                                                          index=False)
        lines.append((key, "fusion head", seed, folder))
    lines.append(("never-trained", "fusion head", 0, tmp_path / "missing"))
    folders = pd.DataFrame(lines, columns=["key", "role", "seed", "folder"])
    metrics = plots.read_metrics(folders)
    assert len(metrics) == 9 and set(metrics["key"]) == {"conv", "sum"} and "folder" not in metrics
    fig = plots.training_curves(metrics, ceilings={"ceiling": 92.9})
    assert len(fig.axes) == 2
    assert plots.read_metrics(folders.iloc[3:]).empty


def scores(labels, predictions, num_classes):
    s = np.zeros((len(labels), num_classes), np.float32)
    s[np.arange(len(labels)), predictions] = 1.0
    return VideoScores([f"v{i}" for i in range(len(labels))], labels, s)


def test_family_accuracy_confusion_grid_and_family_confusion():
    classes = list(CLASS_NAMES)
    families = class_families(classes)
    labels = np.arange(len(classes))
    wrong = labels.copy()
    wmw = [i for i, c in enumerate(classes) if families[c] == "what-moves-where"]
    wrong[wmw] = np.roll(wrong[wmw], 1)  # every what-moves-where video mistaken for another of its family
    perfect, confused = scores(labels, labels, len(classes)), scores(labels, wrong, len(classes))
    acc = plots.family_accuracy(confused, classes)
    assert acc["what-moves-where"] == 0.0 and acc["appearance"] == 100.0
    assert acc["all"] == pytest.approx(100 * (len(classes) - len(wmw)) / len(classes))
    table = plots.family_confusion([confused, perfect], classes)
    assert table.loc["what-moves-where", "what-moves-where"] == 100.0
    fig = plots.confusion_grid({"perfect": [perfect], "confused": [confused, perfect]}, classes)
    assert len(fig.axes) == 2 + 1  # two panels and the shared colour bar


def test_run_accuracy_and_sweep_figures():
    acc = pd.DataFrame({"key": ["a", "a", "b", "b"], "run": [0, 1, 0, 1], "accuracy": [80.0, 70.0, 60.0, 65.0],
                        "seed": [0, 1, 0, 1]})
    assert len(plots.run_accuracy_figure(acc, hue="seed").axes) == 1
    sweep = pd.DataFrame({"w": [0.0, 0.0, 1.0, 1.0], "run": [0, 1, 0, 1], "all": [30.0, 32.0, 90.0, 91.0],
                          "motion": [60.0, 61.0, 88.0, 90.0]})
    assert len(plots.sweep_figure(sweep).axes) == 1


def test_probabilities_figure():
    classes = ["a", "b", "c"]
    fig = plots.probabilities_figure({"spatial": np.array([0.2, 0.3, 0.5]), "temporal": np.array([0.6, 0.2, 0.2])},
                                     classes, true_class="b")
    assert len(fig.axes) == 1 and "b (true)" in [t.get_text() for t in fig.axes[0].get_xticklabels()]


# ----------------------------------------------------------------------------- what the notebooks read


def test_table_result_accuracies(tmp_path):
    from twostream_lib.experiments import TableResult

    labels = np.array([0, 1, 2, 3])
    right, half = scores(labels, labels, 4), scores(labels, np.array([0, 1, 0, 0]), 4)
    result = TableResult("table1", pd.DataFrame(), [], "", runs={"sum@softmax": [right], "conv@relu5": [right, half]})
    acc = result.accuracies()
    assert acc.to_dict("list") == {"key": ["sum@softmax", "conv@relu5", "conv@relu5"], "run": [0, 0, 1],
                                   "accuracy": [100.0, 100.0, 50.0]}
    assert list(result.folders.columns) == ["key", "role", "backbone", "split", "seed", "folder"]