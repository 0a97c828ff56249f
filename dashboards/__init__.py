"""The auditlake explorer (Streamlit): `auditlake explore` or `streamlit run dashboards/app.py`."""
