"""Scheduling: the deployment file and what the Airflow DAGs call."""
