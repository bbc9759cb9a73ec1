"""Shared pytest configuration."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "network: needs network access to PyPI / Debian mirrors (deselect with -m 'not network')"
    )
