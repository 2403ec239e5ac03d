# The task runtime image: what each task pod runs (`python -m argosy.runtime.launcher`).
# It holds the step launcher and the typed-artifact formats; a team adds its own libraries with
# `FROM REGISTRY/argosy/runtime@sha256:...` (or Argosy's environment manifests install them at
# run time, as locally). The executor refuses an image that is not pinned by digest.
#   docker build -f deploy/docker/runtime.Dockerfile -t REGISTRY/argosy/runtime:VERSION .
ARG BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[data]"

FROM ${BASE}
# task pods run with a read-only root filesystem; /scratch (an emptyDir) is HOME and TMPDIR
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/scratch TMPDIR=/scratch
RUN groupadd --system --gid 10001 argosy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin argosy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "argosy[data]" \
 && rm -rf /wheels
USER 10001:10001
WORKDIR /scratch
ENTRYPOINT []
CMD ["python", "-m", "argosy.runtime.launcher", "--help"]
