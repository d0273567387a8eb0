# One image for the CLI, the Celery worker and beat.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core fonts-inter fonts-wqy-microhei \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY billing billing
COPY workers workers
COPY templates templates
COPY alembic alembic
COPY alembic.ini ./
COPY examples examples
ENV UV_PROJECT_ENVIRONMENT=/app/.venv UV_PYTHON_DOWNLOADS=never PATH=/app/.venv/bin:$PATH
RUN uv sync --frozen --no-dev
# An unprivileged user with a fixed uid and gid (10001), owner of the statements folder. A named
# volume mounted on /data/statements starts as a copy of this folder, owner included; a host
# folder mounted there instead must be writable by uid 10001 (chown 10001:10001 it first).
RUN groupadd --system --gid 10001 billing \
 && useradd --system --uid 10001 --gid billing --home-dir /home/billing --create-home \
    --shell /usr/sbin/nologin billing \
 && mkdir -p /data/statements \
 && chown billing:billing /data/statements
ENV BILLING_OUTPUT_DIR=/data/statements
USER billing
