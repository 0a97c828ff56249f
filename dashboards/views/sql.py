"""SQL: a read-only console over the catalog views for analysts."""
from __future__ import annotations

import streamlit as st

from auditlake.catalog import VIEWS, AnalystSQLError, check_analyst_sql
from dashboards import core

EXAMPLE = "SELECT event_type, count(*) AS events\nFROM events\nGROUP BY 1\nORDER BY 2 DESC"


def render(user: dict) -> None:
    st.header("SQL console (read-only)")
    st.caption(f"One SELECT over the views {', '.join(VIEWS)}. PII is masked (PII-shaped text in any column as well); "
               "results are capped at 10,000 rows or 64 MB, a query at 30 s and 3 GB of memory. "
               "Filter on event_date (the partition) to read only the days you need.")
    sql = st.text_area("Query", value=EXAMPLE, height=160, key="sql_text")
    if st.button("Run", key="sql_run", type="primary"):
        try:
            check_analyst_sql(core.explorer().con, sql)  # at once, without a worker
        except AnalystSQLError as exc:
            st.session_state["sql_result"] = (sql, None, False, f"refused: {exc}")
        else:
            try:
                table, capped = core.console().run(sql)
                df = table.to_pandas()
                st.session_state["sql_result"] = (sql, df, capped, None)
                st.session_state["sql_csv"] = core.spreadsheet_safe_csv(df)
            except AnalystSQLError as exc:  # DuckDB's errors, a time or memory limit: said, never raised
                st.session_state["sql_result"] = (sql, None, False, str(exc)[:1000])
            except Exception as exc:  # noqa: BLE001 - anything else is said too
                st.session_state["sql_result"] = (sql, None, False, f"{exc.__class__.__name__}: {str(exc)[:1000]}")
    res = st.session_state.get("sql_result")
    if res:
        _, df, capped, err = res
        if err:
            st.error("The query did not run.")
            st.code(err, language=None)
        else:
            st.caption(f"{len(df):,} rows" + (" (capped)" if capped else ""))
            core.show_table(df, key="sql_table", masked=False)  # the worker masked it (not again, in the server)
            st.download_button("Download CSV", st.session_state["sql_csv"], file_name="query-result.csv",
                               mime="text/csv", key="sql_download")
