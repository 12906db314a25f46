# cioguard: one image for every role (worker, webhooks, flower, sandbox, check).
# No secret is baked in: everything comes from the environment at run time (docker-compose.yml
# passes .env). Build: `docker compose build` (or `docker-compose build`).

# -- build: a wheel and its dependencies in a virtualenv ------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/cioguard
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/cioguard/bin/pip install --upgrade pip && /opt/cioguard/bin/pip install '.[all]'

# -- run: the virtualenv only, as an unprivileged user --------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/cioguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CIOGUARD_LOG_FORMAT=json
RUN groupadd --system --gid 10001 cioguard \
    && useradd --system --uid 10001 --gid cioguard --home-dir /home/cioguard --create-home \
       --shell /usr/sbin/nologin cioguard \
    && install -d -o cioguard -g cioguard /sandbox-ca
COPY --from=build /opt/cioguard /opt/cioguard
USER cioguard
WORKDIR /home/cioguard
# 8000 webhooks, 9100 worker metrics, 5555 Flower, 8443 sandbox (none is published by default)
EXPOSE 8000 9100 5555 8443
CMD ["cioguard", "worker"]
