"""Airflow-side code of the local stack that is not a DAG (on the Airflow programs' PYTHONPATH)."""
