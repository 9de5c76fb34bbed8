"""A real image (no ``ferry.recipe`` label) is bundled as it is, never replaced by its
stand-in; a stand-in with an outdated digest is rebuilt (the docker calls are faked)."""

from pathlib import Path

import pytest

from devkit import images

RECIPE = Path(__file__).resolve().parents[2] / "stacks" / "uni-load" / "images" / "uni-api" / "recipe.yml"


@pytest.fixture
def fake_docker(monkeypatch):
    calls = []
    monkeypatch.setattr(images, "ensure_engine", lambda: None)
    monkeypatch.setattr(images, "_image_id", lambda tag: "sha256:" + "r" * 64)

    def build(*args, **kwargs):
        calls.append("build")
        raise RuntimeError("would build")
    monkeypatch.setattr(images, "_build_rootfs", build)
    monkeypatch.setattr(images, "docker", lambda *a, **k: calls.append(a[0]))
    return calls


def test_real_image_is_kept(fake_docker, monkeypatch):
    monkeypatch.setattr(images, "_image_labels", lambda tag: {"org.opencontainers.image.source": "upstream"})
    assert images.build_image(images.load_recipe(RECIPE)) == "sha256:" + "r" * 64
    assert fake_docker == []


def test_outdated_stand_in_is_rebuilt(fake_docker, monkeypatch, tmp_path):
    monkeypatch.setattr(images, "_image_labels", lambda tag: {images.RECIPE_LABEL: "old-digest"})
    monkeypatch.setenv("FERRY_CACHE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="would build"):
        images.build_image(images.load_recipe(RECIPE))
    assert fake_docker == ["build"]
