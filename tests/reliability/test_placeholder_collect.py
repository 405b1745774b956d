"""Keeps ``make test-reliability`` collecting something until the battery lands."""


def test_battery_package_imports() -> None:
    import tests.reliability

    assert tests.reliability.__doc__
