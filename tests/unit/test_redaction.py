"""Redaction: no run of MIN_SECRET_RUN characters of a secret survives, however it is cut."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3_ingest.redaction import (
    MASK,
    MIN_SECRET_RUN,
    RESPONSE_CODES,
    Redactor,
    credential_refusal,
    display_url,
    printable,
    secret_values,
)

K = MIN_SECRET_RUN
PASSWORD = "Tr0ub4dor&3-Correct-Horse-Battery-Staple-" * 3  # longer than any limit below


def runs_of(secret: str, text: str, k: int = K) -> list[str]:
    """The runs of ``k`` characters of ``secret`` that occur in ``text``."""
    return sorted({secret[i : i + k] for i in range(len(secret) - k + 1)} & windows(text, k))


def windows(text: str, k: int) -> set[str]:
    return {text[i : i + k] for i in range(len(text) - k + 1)}


@pytest.mark.parametrize(
    "echo",
    [
        PASSWORD,
        PASSWORD[:100],  # cut by the server at 100 bytes
        PASSWORD[37:61],  # a slice from the middle
        PASSWORD[-K:],  # the shortest run that counts
        PASSWORD[:50] + "\r\n" + PASSWORD[50:],  # split by a line break
    ],
)
def test_every_piece_of_an_echoed_password_is_masked(echo: str) -> None:
    text = Redactor([PASSWORD]).mask(f"-ERR you said {echo}, didn't you?".encode())
    assert runs_of(PASSWORD, text) == []
    assert MASK in text
    assert text.startswith("-ERR you said ")


@pytest.mark.parametrize("limit", [20, 100, 120, 200])
def test_a_secret_cut_by_the_length_bound_is_still_masked(limit: int) -> None:
    # The bound falls inside the password, wherever it starts.
    for start in range(0, limit, 7):
        text = Redactor([PASSWORD]).mask("x" * start + PASSWORD, limit)
        assert runs_of(PASSWORD, text) == []
        assert len(text) <= limit


def test_the_base64_sasl_form_and_the_latin1_form_are_masked() -> None:
    password = "pässwörd-Geheim-42"
    plain = base64.b64encode(f"\0alice\0{password}".encode())
    redactor = Redactor([password, plain])
    assert runs_of(plain.decode(), redactor.mask(b"-ERR " + plain[5:30])) == []
    latin1 = redactor.mask(b"-ERR " + password.encode("latin-1"))
    assert "Geheim" not in latin1
    assert runs_of(password, latin1) == []


def test_a_url_encoded_secret_is_masked() -> None:
    secret = "cs/with spaces+plus&amp"
    text = Redactor([secret]).mask("client_secret=cs%2Fwith+spaces%2Bplus%26amp")
    assert "spaces" not in text
    assert "%2Bplus" not in text


def test_text_without_secrets_passes_made_printable_and_bounded() -> None:
    redactor = Redactor(["Some-Secret-Value"])
    assert redactor.mask(b"+OK Dovecot ready.\r\n") == "+OK Dovecot ready."
    assert redactor.mask(b"bad\x00byte \xff") == "bad?byte \ufffd"
    long = redactor.mask("y" * 1000, 50)
    assert len(long) == 50
    assert long.endswith("...")


def test_a_secret_shorter_than_a_run_is_masked_where_it_occurs_whole() -> None:
    assert Redactor(["pw1"]).mask("pw1 and pw") == f"{MASK} and pw"


def test_no_secrets_masks_nothing() -> None:
    assert not Redactor(["", b""])
    assert Redactor([]).mask(b"-ERR [AUTH] nope") == "-ERR [AUTH] nope"


def test_masking_cannot_build_a_secret_run_out_of_the_mask_or_the_cut() -> None:
    # The secret holds the mask's own characters and the ellipsis.
    secret = "a***b"
    text = Redactor(["QQQQ", secret]).mask("aQQQQb")
    assert runs_of(secret, text) == []
    assert runs_of("QQQQ", text) == []
    cut = "Zb..."
    text = Redactor([cut]).mask("aaaaaZb" + "c" * 20, 10)
    assert runs_of(cut, text) == []


def test_secret_values_are_found_by_field_name_at_any_depth() -> None:
    @dataclasses.dataclass
    class Login:
        user: str
        password: str

    data = {
        "host": "pop.example.com",
        "Password": "pw-1",
        "auth": {"client_secret": "cs-2", "scope": "s", "refresh_token": ""},
        "tokens": [{"access_token": "at-3"}, {"token": "t-4"}],
        "login": Login("alice", "pw-5"),
        "note": "pw-1",
    }
    assert secret_values(data) == ("pw-1", "cs-2", "at-3", "t-4", "pw-5")
    assert secret_values(["pw", 1, None]) == ()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://login.example.com/t?code=abc#frag", "https://login.example.com/t"),
        ("https://user:pw@login.example.com:8443/t", "https://login.example.com:8443/t"),
        ("http://[::1]:8080/token", "http://[::1]:8080/token"),
    ],
)
def test_a_url_is_shown_without_credentials_query_or_fragment(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_printable_keeps_its_old_signature() -> None:
    assert printable(b"-ERR hunter2-secret-x", (b"hunter2-secret-x",), limit=120) == f"-ERR {MASK}"


@pytest.mark.parametrize("code", sorted(RESPONSE_CODES))
def test_a_refusal_of_credentials_keeps_only_a_registered_code(code: str) -> None:
    line = f"-ERR [{code.lower()}] wrong password {PASSWORD}".encode()
    assert credential_refusal(line) == f"-ERR [{code}]".encode()


@pytest.mark.parametrize(
    "line", [b"-ERR [TR0UB4DOR] no", b"-ERR Tr0ub4dor", b"-ERR", b"garbage Tr0ub4dor"]
)
def test_a_refusal_of_credentials_drops_unregistered_codes_and_all_text(line: bytes) -> None:
    assert credential_refusal(line) == b"-ERR"


# -- the property ---------------------------------------------------------------------

secrets = st.text(min_size=K, max_size=120)


@st.composite
def text_embedding_a_slice(draw: st.DrawFn) -> tuple[str, str, str]:
    secret = draw(secrets)
    start = draw(st.integers(0, len(secret) - K))
    end = draw(st.integers(start + K, len(secret)))
    before = draw(st.text(max_size=60))
    after = draw(st.text(max_size=60))
    return secret, secret[start:end], before + secret[start:end] + after


@settings(max_examples=400, deadline=None)
@given(case=text_embedding_a_slice(), limit=st.one_of(st.none(), st.integers(0, 250)))
def test_no_slice_of_a_secret_survives_masking(
    case: tuple[str, str, str], limit: int | None
) -> None:
    secret, _, text = case
    shown = Redactor([secret]).mask(text, limit)
    assert runs_of(secret, shown) == []
    if limit is not None:
        assert len(shown) <= max(limit, len(MASK))


@settings(max_examples=200, deadline=None)
@given(case=text_embedding_a_slice(), encoding=st.sampled_from(["utf-8", "latin-1"]))
def test_no_slice_survives_in_server_bytes(case: tuple[str, str, str], encoding: str) -> None:
    secret, _, text = case
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    shown = Redactor([secret]).mask(raw, 120)
    assert runs_of(secret, shown) == []


def test_a_listing_line_out_of_step_is_masked_in_the_error() -> None:
    from pop3_ingest.errors import SessionOutOfStep
    from pop3_ingest.pop3.listing import parse_listing

    secret = b"Zq9!xW2#vR7$"
    with pytest.raises(SessionOutOfStep) as info:
        parse_listing([b"1 fine", b"not a listing line " + secret[2:9]], [b"1 10"], (secret,))
    assert b"9!xW2#v".decode() not in str(info.value)
    assert "UIDL listing line 2" in str(info.value)
