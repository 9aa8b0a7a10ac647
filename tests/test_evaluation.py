"""`evaluate` and test-time augmentation: the views by hand, the accuracies by hand from
`model.predict`, one `predict_on_batch` call per batch, int or one-hot labels.

The tests share one tiny model and one batch shape (8 images in batches of 4): each new shape
traces the prediction function again."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    REPORT_LABELS,
    REPORT_WRONG,
    assert_close_across_kernels,
    report_model,
    reshuffling_dataset,
)

import tfresnet
from tfresnet.insight import evaluation, multi_label_metrics

SIZE = 32
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return tfresnet.build_classifier(NUM_CLASSES, backbone="resnet-test", weights=None, image_size=SIZE)


def _images(count: int = 8) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


def _dataset(images: np.ndarray, labels: np.ndarray, batch_size: int = 4) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def _views_by_hand(images: np.ndarray) -> list[np.ndarray]:
    """The original, the flip, and the four corner crops of 28 px (7/8 of 32) resized back."""
    side = 28
    crops = [
        tf.image.resize(images[:, top : top + side, left : left + side], (SIZE, SIZE), antialias=True).numpy()
        for top, left in ((0, 0), (0, SIZE - side), (SIZE - side, 0), (SIZE - side, SIZE - side))
    ]
    return [images, images[:, :, ::-1], *crops]


def test_tta_views_are_the_flip_and_the_corner_crops_resized_back():
    # A ramp, 10 x row + column: bilinear resizing keeps it linear, so each crop is known exactly.
    rows = np.arange(8)
    ramp = (10 * rows[:, None] + rows[None, :]).astype("float32")
    images = np.stack([np.stack([ramp, ramp + 100, 255 - ramp], axis=-1), ramp[..., None].repeat(3, -1)])
    views = evaluation.tta_views(images).numpy()
    assert views.shape == (len(evaluation.TTA_VIEWS), 2, 8, 8, 3) == (6, 2, 8, 8, 3)
    np.testing.assert_array_equal(views[0], images)
    np.testing.assert_array_equal(views[1], images[:, :, ::-1])
    # A 7 px crop resized to 8: output pixel j samples the crop at (j + 0.5) * 7/8 - 0.5, clamped.
    sampled = np.clip((rows + 0.5) * 7 / 8 - 0.5, 0, 6)
    for view, (top, left) in zip(views[2:], ((0, 0), (0, 1), (1, 0), (1, 1))):
        expected = 10 * (top + sampled)[:, None] + (left + sampled)[None, :]
        np.testing.assert_allclose(view[1, ..., 0], expected, atol=1e-4)
        np.testing.assert_allclose(view[0, ..., 2], 255 - expected, atol=1e-4)
    # Graph-safe, with unknown sizes.
    traced = tf.function(evaluation.tta_views, input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_allclose(traced(images).numpy(), views, atol=1e-5)  # the same image ops, traced


def test_tta_views_refuse_a_single_image():
    with pytest.raises(ValueError, match=r"batch of images.*Received: shape=\(8, 8, 3\)"):
        evaluation.tta_views(np.zeros((8, 8, 3), "float32"))


def test_accuracy_is_the_argmax_agreement_of_model_predict(model):
    images = _images()
    predicted = model.predict(images, batch_size=4, verbose=0).argmax(axis=1)
    labels = np.where(np.arange(8) < 5, predicted, (predicted + 1) % NUM_CLASSES)  # 5 of 8 right
    result = tfresnet.evaluate(model, _dataset(images, labels))
    assert result == {"accuracy": pytest.approx(5 / 8), "num_images": 8}


def test_accuracy_tta_is_the_argmax_of_the_hand_averaged_views(model, monkeypatch):
    images = _images()
    by_view = [model.predict(view, batch_size=4, verbose=0) for view in _views_by_hand(images)]
    averaged = np.mean(by_view, axis=0)
    labels = averaged.argmax(axis=1)  # every TTA prediction right
    calls = []
    predict_on_batch = model.predict_on_batch
    monkeypatch.setattr(model, "predict_on_batch", lambda x: calls.append(x.shape[0]) or predict_on_batch(x))
    probabilities, found = evaluation.predict_tta(model, _dataset(images, labels))
    assert calls == [6 * 4, 6 * 4]  # one call per batch, on all its views
    assert_close_across_kernels(probabilities, averaged)  # batches of 24 views against batches of 4
    np.testing.assert_array_equal(found, labels)
    result = tfresnet.evaluate(model, _dataset(images, labels), tta=True)
    assert result["accuracy_tta"] == 1.0
    assert result["accuracy"] == pytest.approx(np.mean(by_view[0].argmax(axis=1) == labels))
    assert result["tta_views"] == list(evaluation.TTA_VIEWS) and result["num_images"] == 8


def test_one_hot_labels_give_the_same_accuracies(model):
    images = _images()
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    with_indices = tfresnet.evaluate(model, _dataset(images, labels), tta=True)
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels]
    assert tfresnet.evaluate(model, _dataset(images, one_hot), tta=True) == with_indices


def test_class_indices():
    np.testing.assert_array_equal(evaluation.class_indices([2, 0]), [2, 0])
    np.testing.assert_array_equal(evaluation.class_indices([[2], [0]]), [2, 0])
    np.testing.assert_array_equal(evaluation.class_indices([[0.0, 0.0, 1.0], [0.7, 0.3, 0.0]]), [2, 0])
    with pytest.raises(ValueError, match=r"Received: labels of shape \(1, 2, 3\)"):
        evaluation.class_indices(np.zeros((1, 2, 3)))


def test_an_empty_or_unlabelled_dataset_is_refused(model):
    empty = _dataset(_images()[:0], np.zeros(0, "int64"))
    with pytest.raises(ValueError, match="empty"):
        tfresnet.evaluate(model, empty)
    unlabelled = tf.data.Dataset.from_tensor_slices(_images()).batch(4)
    with pytest.raises(ValueError, match=r"\(images, labels\) batches. Received: TensorSpec"):
        tfresnet.evaluate(model, unlabelled, tta=True)


# === Multi-label ===

# Four images, two labels (as in test_multi_label_metrics.py): at 0.5, label 0 is predicted on
# images 0 and 1 (one right, one wrong, one missed), label 1 on images 1 and 2 (both right).
PROBABILITIES = np.array([[0.9, 0.2], [0.7, 0.6], [0.4, 0.8], [0.1, 0.3]], "float32")
MULTI_HOT = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], "float32")


def _sigmoid_model() -> keras.Model:
    """A multi-label model whose probabilities are the sigmoid of its images' channel means:
    images filled with logit(p) get p, in every TTA view."""
    inputs = keras.Input((SIZE, SIZE, 2))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(2, activation="sigmoid", name="predictions", kernel_initializer="identity")
    return keras.Model(inputs, dense(pooled))


def _filled(probabilities: np.ndarray) -> np.ndarray:
    logits = np.log(probabilities / (1 - probabilities))
    return np.broadcast_to(logits[:, None, None, :], (len(probabilities), SIZE, SIZE, 2)).astype("float32")


def test_multi_label_evaluate_by_hand():
    model = _sigmoid_model()
    dataset = _dataset(_filled(PROBABILITIES), MULTI_HOT, batch_size=3)
    assert tfresnet.evaluate(model, dataset) == {
        "mean_average_precision": pytest.approx((5 / 6 + 1) / 2),
        "f1_micro": pytest.approx(6 / 8),
        "f1_macro": pytest.approx((0.5 + 1) / 2),
        "num_images": 4,
    }
    # Label 0 from 0.35: also predicted on image 2, rightly; every view is the image itself.
    found = tfresnet.evaluate(model, dataset, tta=True, thresholds=[0.35, 0.5])
    assert found["f1_micro"] == pytest.approx(8 / 9) and found["f1_macro"] == pytest.approx(0.9)
    for key in ("mean_average_precision", "f1_micro", "f1_macro"):
        assert found[f"{key}_tta"] == pytest.approx(found[key])
    assert found["tta_views"] == list(evaluation.TTA_VIEWS) and found["num_images"] == 4
    probabilities, labels = evaluation.predict_probabilities(model, dataset)
    np.testing.assert_allclose(probabilities, PROBABILITIES, atol=1e-5)
    assert labels.dtype == np.float32 and labels.tolist() == MULTI_HOT.tolist()


def test_multi_label_tta_averages_the_views_probabilities():
    keras.utils.set_random_seed(0)
    model = tfresnet.build_classifier(
        3, backbone="resnet-test", weights=None, image_size=SIZE, multi_label=True
    )
    images = _images()
    labels = (np.random.default_rng(1).uniform(size=(8, 3)) < 0.5).astype("float32")
    by_view = [model.predict(view, batch_size=4, verbose=0) for view in _views_by_hand(images)]
    probabilities, found = evaluation.predict_tta(model, _dataset(images, labels))
    assert_close_across_kernels(probabilities, np.mean(by_view, axis=0))
    np.testing.assert_array_equal(found, labels)
    result = tfresnet.evaluate(model, _dataset(images, labels), tta=True)
    averaged = multi_label_metrics.label_scores(probabilities, labels)
    single = multi_label_metrics.label_scores(by_view[0], labels)
    for key in ("mean_average_precision", "f1_micro", "f1_macro"):
        assert result[f"{key}_tta"] == pytest.approx(averaged[key])
        assert result[key] == pytest.approx(single[key])


def test_labelled_batches_keep_multi_hot_rows_and_refuse_class_indices():
    dataset = _dataset(_filled(PROBABILITIES), MULTI_HOT, batch_size=3)
    rows = [labels for _, labels in evaluation.labelled_batches(dataset, multi_label=True)]
    assert [batch.tolist() for batch in rows] == [MULTI_HOT[:3].tolist(), MULTI_HOT[3:].tolist()]
    indices = [labels for _, labels in evaluation.labelled_batches(dataset)]
    assert np.concatenate(indices).tolist() == [0, 1, 0, 0]  # the argmax, as for one-hot labels
    indices_dataset = _dataset(_filled(PROBABILITIES), np.array([0, 1, 1, 0]), batch_size=3)
    with pytest.raises(ValueError, match=r"multi-hot label rows .* Received: labels of shape \(3,\)"):
        tfresnet.evaluate(_sigmoid_model(), indices_dataset)


def test_thresholds_are_for_multi_label_models_only(model):
    with pytest.raises(ValueError, match="thresholds apply to a multi-label model"):
        tfresnet.evaluate(model, _dataset(_images(), np.zeros(8, "int64")), thresholds=[0.5, 0.5, 0.5])


# === One pass for the reports: the highest-loss images and each class's first ones ===


def test_a_pass_keeps_the_top_loss_images_with_their_own_predictions():
    found = evaluation.evaluation_pass(report_model(), reshuffling_dataset(), keep=len(REPORT_WRONG))
    probabilities, labels, top, _, tta = found
    assert sorted(labels) == sorted(REPORT_LABELS) and tta is None
    shown = {int(round(image[0, 0, 2] / 10)) for image in top.values()}
    assert shown == REPORT_WRONG
    for position, image in top.items():
        assert image[0, 0, 0] / 100 == labels[position]  # the image shows the label reported for it
        assert image[0, 0, 1] == 255
        assert probabilities[position].argmax() == (labels[position] + 1) % 3


def test_a_pass_keeps_each_class_s_first_images_with_their_own_labels():
    _, labels, _, samples, _ = evaluation.evaluation_pass(report_model(), reshuffling_dataset(), per_class=2)
    assert sorted(samples) == [0, 1, 2]
    for label, kept in samples.items():
        assert sorted(kept) == list(np.flatnonzero(labels == label)[:2])
        for image in kept.values():
            assert image[0, 0, 0] / 100 == label


def test_a_multi_label_pass_keeps_the_images_of_the_highest_mean_cross_entropy():
    rng = np.random.default_rng(0)
    images = _filled(rng.uniform(0.05, 0.95, (8, 2)))
    rows = rng.integers(0, 2, (8, 2)).astype("float32")
    found = evaluation.evaluation_pass(_sigmoid_model(), _dataset(images, rows), keep=3)
    np.testing.assert_array_equal(found.labels, rows)
    losses = multi_label_metrics.image_losses(found.probabilities, rows)
    assert sorted(found.highest_losses) == sorted(np.argsort(-losses)[:3])
    for position, image in found.highest_losses.items():
        np.testing.assert_array_equal(image, images[position])
    assert found.samples == {}  # first images per class: single-label only
