import pytest

from kanthorq.tokens import Token, Tokens, bearer


def test_a_token_matches_only_its_own_secret():
    read_only = Token("other", name="b", scopes=frozenset({"read"}))
    tokens = Tokens([Token("s3cret", name="a"), read_only])
    assert tokens.match("s3cret").name == "a"
    assert tokens.match("other").name == "b"
    assert tokens.match("s3cre") is None
    assert tokens.match("") is None
    assert tokens.match(None) is None
    assert tokens.from_header("Bearer other").name == "b"
    assert tokens.from_header("Basic other") is None


def test_scopes_and_streams_limit_what_a_token_allows():
    token = Token("x", scopes=frozenset({"publish"}), streams=frozenset({"orders"}))
    assert token.allows("publish", "orders")
    assert not token.allows("publish", "billing")
    assert not token.allows("read", "orders")
    assert Token("y").allows("admin", "anything")


def test_bad_tokens_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        Token(" ")
    with pytest.raises(ValueError, match="unknown scope 'write'"):
        Token("z", scopes=frozenset({"write"}))


def test_no_tokens_accept_nothing():
    assert not Tokens.of(None, "")
    assert Tokens.of(None, "t").match("t") is not None
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Bearer") is None
