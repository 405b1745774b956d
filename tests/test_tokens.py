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


def test_a_tokens_file_has_one_token_per_line(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(
        "# the publishers\n"
        "\n"
        "s3cret  name=orders-svc  scopes=publish,read  streams=orders,billing\n"
        "   r34d   scopes=read\n"
        "all-of-it\n"
    )
    tokens = Tokens.load(path)
    assert len(tokens) == 3
    orders, reader, full = list(tokens)
    assert orders == Token(
        "s3cret",
        name="orders-svc",
        scopes=frozenset({"publish", "read"}),
        streams=frozenset({"orders", "billing"}),
    )
    assert reader.name == "line 4"
    assert reader.scopes == frozenset({"read"})
    assert reader.streams is None
    assert full.allows("publish", "anything")
    assert tokens.match("r34d") is reader


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok\nx colour=red\n", "line 2: unknown field 'colour=red'"),
        ("x scopes=write\n", "line 1: .*unknown scope 'write'"),
        ("x streams=no-dashes\n", "line 1: stream name 'no-dashes' is not valid"),
        ("x streams=\n", "line 1: streams= is empty"),
        ("x name=a name=b\n", "line 1: name= is given twice"),
        ("scopes=read x\n", "line 1: a line starts with the secret"),
        ("same\nsame scopes=read\n", "two lines have the same secret"),
    ],
)
def test_a_bad_tokens_file_names_the_line(tmp_path, text, message):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Tokens.load(path)


def test_a_token_never_shows_its_secret():
    token = Token("hunter2-secret", name="ci")
    assert "hunter2" not in repr(token)
    assert "hunter2" not in repr(Tokens([token]).match("hunter2-secret"))
