# The prediction service image: `argosy models serve MODEL@ALIAS` against an Argosy server.
# Build from the repository root (EXTRAS: what the model needs to load, e.g. demo for
# scikit-learn and joblib):
#   docker build -f deploy/docker/serving.Dockerfile --build-arg EXTRAS=demo \
#       -t REGISTRY/argosy/serving:VERSION .
# It reads the registry and the model's bytes from ARGOSY_SERVER with ARGOSY_TOKEN (a viewer
# API token of ARGOSY_TENANT), and accepts as bearer tokens what that server accepts.
ARG BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE} AS build
ARG EXTRAS=demo
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

FROM ${BASE}
ARG EXTRAS=demo
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 ARGOSY_HOME=/tmp/argosy
RUN groupadd --system --gid 10001 argosy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin argosy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "argosy[${EXTRAS}]" \
 && rm -rf /wheels
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["argosy", "models", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["breast-cancer@production"]
