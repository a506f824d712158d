"""A multi-label package through the HTTP service: every label above its threshold comes back marked."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
from PIL import Image

from imgcls.models import create_model, data_config
from imgcls.predict import Classifier
from imgcls.serve import create_app


def test_serve_returns_positive_labels(tmp_path: Path) -> None:
    from imgcls.package import save_package

    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))  # the serve tests' real-server helper
    from serve_fixtures import running_server

    model = create_model("lenet5", 3)
    labels = ["cat", "dog", "向日葵"]
    # Thresholds 0 for "cat" (always present) and 1.01 for "dog" (never): the answer is known whatever the weights.
    package = save_package(
        model.eval(),
        tmp_path / "model",
        labels=labels,
        data_config=data_config(model),
        task="multilabel",
        info={"thresholds": [0.0, 1.01, 0.5]},
    )
    clf = Classifier.load(package, backend="torch")
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 30, 30)).save(buf, format="PNG")
    with running_server(create_app(clf)) as url:
        reply = httpx.post(f"{url}/v1/classify", files={"file": ("x.png", buf.getvalue(), "image/png")}, timeout=30)
    assert reply.status_code == 200, reply.text
    top = reply.json()["predictions"][0]["top"]
    by_label = {t["label"]: t for t in top}
    assert by_label["cat"]["positive"] is True
    assert "dog" not in by_label or by_label["dog"]["positive"] is False
    assert all(0 <= t["score"] <= 1 for t in top)
