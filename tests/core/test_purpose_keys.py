"""Per-purpose key material: each purpose's tasks hold only their own keys, issued from the
master by an operator; another purpose's pseudonyms and tokens cannot be computed or checked
with them, and a purpose refuses another's key."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from datetime import date
from pathlib import Path

import pytest

from pipeline.cli import Exit, main
from pipeline.core.errors import KeyUnavailableError
from pipeline.core.keys import PurposeKey, parse_key
from pipeline.run import run_all
from tests.conftest import TEST_KEY_TEXT, write_config

MASTER = parse_key(TEST_KEY_TEXT, source="test")


def test_when_analytics_holds_its_key_then_it_can_neither_compute_nor_check_personalization(
        ) -> None:
    analytics = MASTER.issue("analytics")
    assert analytics.pseudonym_key("analytics") == MASTER.pseudonym_key("analytics")
    assert analytics.token_key("analytics") == MASTER.token_key("analytics")
    for use in (lambda k: k.pseudonym_key("personalization"),
                lambda k: k.token_key("personalization"),
                lambda k: k.derive("epoch-pseudonym:personalization"),
                lambda k: k.issue("personalization")):
        with pytest.raises(KeyUnavailableError, match="analytics"):
            use(analytics)
    # nothing it holds makes or checks a personalization pseudonym
    target = hmac.new(MASTER.pseudonym_key("personalization").hex().encode(), b"acct-1",
                      hashlib.sha256).hexdigest()
    assert all(hmac.new(k.hex().encode(), b"acct-1", hashlib.sha256).hexdigest() != target
               and k != MASTER.pseudonym_key("personalization")
               for k in analytics.subkeys.values())
    # its text round-trips, and neither it nor the key bytes show in a repr
    again = parse_key(analytics.text(), source="test")
    assert isinstance(again, PurposeKey) and again.purpose == "analytics"
    assert again.subkeys == analytics.subkeys and again.key_id == MASTER.key_id
    assert analytics.text().split(":")[1] not in repr(analytics)
    assert analytics.own_fingerprint() != MASTER.issue("personalization").own_fingerprint()


@pytest.mark.slow
def test_when_each_purpose_runs_on_its_own_key_then_analytics_publishes_and_refuses_to_lend_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.demo.generate import generate

    generate(tmp_path / "data", start=date(2026, 11, 1), users=300, seed=5)
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)  # the operator's master
    analytics = write_config(tmp_path, "analytics")  # extends the one below
    personalization = write_config(tmp_path, keys__purpose_key_only=True)
    out = tmp_path / "analytics.key"
    assert main(["--config", str(analytics), "issue-key", "--out", str(out)]) == Exit.OK
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "issued the key of purpose 'analytics'" in capsys.readouterr().err
    # the workers: only the analytics key in their environment
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", out.read_text().strip())
    ctx, published = run_all("2026-11-01", analytics)
    assert published and isinstance(ctx.key, PurposeKey)
    with pytest.raises(KeyUnavailableError, match="issued to purpose 'analytics'; purpose "
                                                  "'personalization' needs its own"):
        run_all("2026-11-01", personalization)
    # a master where the config asks for the purpose's own key is refused too
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", TEST_KEY_TEXT)
    with pytest.raises(KeyUnavailableError, match="purpose_key_only"):
        run_all("2026-11-01", personalization)
    capsys.readouterr()
    monkeypatch.setenv("PRIVACY_PIPELINE_TEST_KEY", out.read_text().strip())
    assert main(["--config", str(analytics), "audit-log", "--json"]) == Exit.OK
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    issued = [e for e in entries if e["action"] == "issue_key"]
    assert issued and issued[0]["detail"]["issued_to"] == "analytics"
    assert out.read_text().split(":")[1].strip() not in json.dumps(entries)
