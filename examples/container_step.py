"""A pipeline that mixes a Python step with a container step (non-Python work).

Runs where podman or docker can run the image:

    argosy run examples/container_step.py:shout_pipeline -p text="hello from argosy"

In production, pin the image by digest (``image@sha256:...``), as CI would record it. The
image here can be overridden with ARGOSY_EXAMPLE_IMAGE (the tests build a local busybox
image, since no registry is reachable from their machines).
"""

from __future__ import annotations

import os

from argosy import container_step, pipeline, step

IMAGE = os.environ.get("ARGOSY_EXAMPLE_IMAGE", "docker.io/library/busybox:1.36")

shout = container_step(
    name="shout",
    image=IMAGE,
    command=["sh", "-c", "tr a-z A-Z < {{inputs.text.path}} > {{outputs.loud.path}}"],
    inputs={"text": str},
    outputs={"loud": str},
)


@step
def greet(text: str) -> str:
    return f"{text}!"


@step
def count_letters(loud: str) -> int:
    return sum(c.isupper() for c in loud)


@pipeline
def shout_pipeline(text: str = "hello") -> dict:
    loud = shout(text=greet(text=text))
    return {"loud": loud, "capitals": count_letters(loud=loud)}
