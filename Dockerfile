# One image for the CLI, the Celery worker and beat.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
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
USER nobody
