# One-shot image holding every service, to run all Alembic migrations before the services start
# (compose's `migrate` service and the Kubernetes migration Job).
FROM python:3.11-slim
RUN pip install --no-cache-dir uv==0.13.9 && useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
RUN uv sync --frozen --no-dev --no-editable --all-packages
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
COPY deploy/migrate-all.sh /usr/local/bin/migrate-all
USER app
ENTRYPOINT ["migrate-all"]
