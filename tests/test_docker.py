"""The compose file and Dockerfile say what the README promises (no Docker engine runs on these machines)."""

from __future__ import annotations

from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def test_compose_has_a_pinned_neo4j_5_with_a_health_check() -> None:
    doc = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    neo4j = doc["services"]["neo4j"]
    image, tag = neo4j["image"].split(":")
    assert image == "neo4j" and tag.startswith("5.") and tag != "5"  # a pinned release, not a moving tag
    assert "cypher-shell" in " ".join(neo4j["healthcheck"]["test"])
    assert "NEO4J_PASSWORD" in neo4j["environment"]["NEO4J_AUTH"]  # credentials from the environment
    assert any(v.endswith(":/data") for v in neo4j["volumes"])
    for name in ("kgexplain", "kgexplain-cuda"):
        svc = doc["services"][name]
        assert svc["depends_on"]["neo4j"]["condition"] == "service_healthy"
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    assert doc["services"]["kgexplain-cuda"]["build"]["args"]["TORCH_INDEX"] == ""  # the default index: CUDA wheels


def test_dockerfile_pins_the_projects_torch() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "torch==2.14.1" in text and "torchvision==0.29.1" in text
    assert "pypi.org" not in text  # pip's default index needs no URL
    assert 'ENTRYPOINT ["kgexplain"]' in text
