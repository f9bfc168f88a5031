"""The Python API: metadata-driven preprocessing, predictions, the random-weights notice, thread safety."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dat_deploy.api import Classifier, softmax
from dat_deploy.errors import UserError
from dat_deploy.labels import imagenet_classes
from dat_deploy.preprocess import preprocess, sample_images

from small_classifier import MEAN, RANDOM_META, RESIZE, SIZE, STD, small_classifier_onnx


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    small_classifier_onnx(path, RANDOM_META)
    return path


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 256, size=(40 + i, 50 + 2 * i, 3), dtype=np.uint8)) for i in range(count)]


def test_metadata_drives_preprocessing(small_onnx):
    clf = Classifier.from_artifact(small_onnx)
    info = clf.info
    assert (info.input_size, info.resize_size, info.mean, info.std) == (SIZE, RESIZE, MEAN, STD)
    assert info.num_classes == 1000 and info.random_weights and info.random_init_seed == 0
    images = _images(2)
    np.testing.assert_array_equal(clf.preprocess(images), preprocess(images, SIZE, RESIZE, MEAN, STD))


def test_predict_topk_matches_logits_and_labels(small_onnx):
    clf = Classifier.from_artifact(small_onnx)
    images = _images(5)
    predictions = clf.predict(images, topk=3, batch_size=2)  # three batches: 2 + 2 + 1
    logits = clf.predict_batch(preprocess(images, SIZE, RESIZE, MEAN, STD))
    probabilities = softmax(logits)
    assert len(predictions) == 5
    names = imagenet_classes()
    for prediction, row in zip(predictions, probabilities):
        expected = np.argsort(row)[::-1][:3]
        assert list(prediction.indices) == expected.tolist()
        assert list(prediction.labels) == [names[i] for i in expected]
        np.testing.assert_allclose(prediction.probabilities, row[expected], rtol=1e-6)
        assert prediction.probabilities[0] >= prediction.probabilities[1] >= prediction.probabilities[2]
    assert len({p.indices for p in predictions}) > 1  # different images, different answers


def test_random_weights_notice(tmp_path, small_onnx):
    clf = Classifier.from_artifact(small_onnx)
    prediction = clf.predict(_images(1))[0]
    assert prediction.random_weights and "meaningless" in prediction.notice
    assert "meaningless" in prediction.to_dict()["notice"]

    trained = tmp_path / "trained.onnx"
    small_classifier_onnx(trained, {**{k: v for k, v in RANDOM_META.items() if k != "random_init_seed"},
                                     "weights_sha256": "ab" * 32})
    clf = Classifier.from_artifact(trained)
    prediction = clf.predict(_images(1))[0]
    assert not clf.info.random_weights and clf.notice is None and prediction.notice is None
    assert clf.info.weights_sha256 == "ab" * 32


def test_metadata_is_read_tolerantly(tmp_path):
    path = tmp_path / "terse.onnx"
    small_classifier_onnx(path, {"input_size": "32", "mean": "0.5, 0.4, 0.3", "std": "(0.2 0.25 0.3)"})
    info = Classifier.from_artifact(path).info
    assert info.mean == MEAN and info.std == STD
    assert info.resize_size == int(256 / 224 * 32)  # the DAT default when the export did not record it
    assert any("resize_size" in w for w in info.warnings)
    assert info.num_classes == 1000  # read off the graph's output shape


def test_triton_model_folder_and_bad_artifacts(tmp_path):
    folder = tmp_path / "models" / "small"
    (folder / "1").mkdir(parents=True)
    small_classifier_onnx(folder / "1" / "model.onnx", RANDOM_META)
    assert Classifier.from_artifact(folder).info.input_size == SIZE

    with pytest.raises(UserError, match="does not exist"):
        Classifier.from_artifact(tmp_path / "nope.onnx")
    (tmp_path / "weights.pth").write_bytes(b"x")
    with pytest.raises(UserError, match="neither an ONNX"):
        Classifier.from_artifact(tmp_path / "weights.pth")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match="broken.onnx"):
        Classifier.from_artifact(tmp_path / "broken.onnx")


def test_predict_batch_refuses_wrong_arrays(small_onnx):
    clf = Classifier.from_artifact(small_onnx)
    with pytest.raises(UserError, match=r"\(N, 3, 32, 32\)"):
        clf.predict_batch(np.zeros((1, 3, 24, 24), np.float32))
    with pytest.raises(UserError, match="float64"):
        clf.predict_batch(np.zeros((1, 3, SIZE, SIZE)))


def test_concurrent_requests_share_one_session(small_onnx):
    """N threads x M requests through one Classifier: each answer equals the single-threaded one."""
    clf = Classifier.from_artifact(small_onnx)
    assert clf.backend.name.startswith("ort")
    images = _images(12)
    requests = [images[i:i + 1 + i % 3] for i in range(len(images))]  # batches of 1-3 images
    expected = [clf.predict(r, topk=5) for r in requests]
    expected_logits = [clf.predict_batch(clf.preprocess(r)) for r in requests]

    threads, rounds = 6, 4
    barrier = threading.Barrier(threads)
    results: dict[tuple[int, int, int], object] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for m in range(rounds):
                k = (t * rounds + m) % len(requests)  # every thread walks the requests in its own order
                results[(t, m, k)] = (clf.predict(requests[k], topk=5),
                                      clf.predict_batch(clf.preprocess(requests[k])))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not errors
    assert len(results) == threads * rounds
    for (_, _, k), (predictions, logits) in results.items():
        assert predictions == expected[k]
        np.testing.assert_array_equal(logits, expected_logits[k])


def test_sources_are_named(small_onnx, tmp_path):
    clf = Classifier.from_artifact(small_onnx)
    path = tmp_path / "x.png"
    _images(1)[0].save(path)
    samples = sample_images()
    predictions = clf.predict([str(path), *samples, np.zeros((8, 8, 3), np.uint8), path.read_bytes()])
    assert [p.source for p in predictions] == [str(path), "astronaut", "chelsea", "coffee", "image[4]", "image[5]"]
    assert predictions[5].indices == predictions[0].indices  # the same PNG, as a file and as uploaded bytes

    with pytest.raises(UserError, match="image bytes is not an image"):
        clf.predict([b"garbage upload"])


def test_feature_exports_are_refused(tmp_path):
    path = tmp_path / "features.onnx"
    small_classifier_onnx(path, {**RANDOM_META, "outputs": "features"})
    with pytest.raises(UserError, match="feature-map export"):
        Classifier.from_artifact(path)


def test_cli_predict_on_sample_images_with_the_random_default():
    from dat_deploy.cli import app

    result = CliRunner().invoke(app, ["predict", "--variant", "dat_t", "--topk", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["model"]["random_weights"] is True and "meaningless" in payload["notice"]
    assert [p["source"] for p in payload["predictions"]] == ["astronaut", "chelsea", "coffee"]
    top = payload["predictions"][0]["top"]
    assert len(top) == 2 and top[0]["label"] == imagenet_classes()[top[0]["index"]]


def test_cli_predict_table_and_folder(small_onnx, tmp_path):
    from dat_deploy.cli import app

    for i, image in enumerate(_images(3)):
        image.save(tmp_path / f"img{i}.png")
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["predict", str(tmp_path), "--model", str(small_onnx),
                                                            "--topk", "1"])
    assert result.exit_code == 0, result.output
    assert "meaningless" in result.output and "img2.png" in result.output

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "empty"), "--model", str(small_onnx)])
    assert result.exit_code != 0 and "contains no image files" in str(result.exception)


@pytest.mark.slow
def test_dat_t_artifact_end_to_end(export_once):
    """Export DAT-T, serve it through the API from several threads, and agree with PyTorch."""
    folder = export_once("dat_t").folder
    ort_clf = Classifier.from_artifact(folder)  # the Triton model folder export wrote
    assert ort_clf.info.variant == "dat_t" and ort_clf.info.resize_size == 256 and ort_clf.info.random_weights
    samples = sample_images()
    ort_predictions = ort_clf.predict(samples, topk=5)

    torch_clf = Classifier.from_variant("dat_t")
    torch_logits = torch_clf.predict_batch(torch_clf.preprocess([img for _, img in samples]))
    ort_logits = ort_clf.predict_batch(ort_clf.preprocess([img for _, img in samples]))
    np.testing.assert_allclose(ort_logits, torch_logits, atol=2e-3, rtol=1e-3)
    assert [p.indices[0] for p in ort_predictions] == np.argmax(torch_logits, axis=1).tolist()

    results: list[list] = [None] * 3

    def worker(i: int) -> None:
        results[i] = ort_clf.predict(samples[i:] + samples[:i], topk=5)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    for i, predictions in enumerate(results):
        assert predictions == ort_predictions[i:] + ort_predictions[:i]
