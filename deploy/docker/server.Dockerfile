# The Argosy server image: `argosy server`, `argosy db upgrade`, the admin commands.
# Build from the repository root:
#   docker build -f deploy/docker/server.Dockerfile -t REGISTRY/argosy/server:VERSION .
# and deploy it by the digest the push reports (deploy/kustomize: `kustomize edit set image`).
# The base is pinned by digest; re-pin it deliberately (`docker buildx imagetools inspect
# python:3.11-slim-bookworm`) when taking a new Python patch release.
ARG BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[kubernetes]"

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ARGOSY_HOME=/var/lib/argosy
RUN groupadd --system --gid 10001 argosy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin argosy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "argosy[kubernetes]" \
 && rm -rf /wheels
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["argosy"]
CMD ["server"]
