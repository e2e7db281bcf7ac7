from tests.support.live_api import live_api  # noqa: F401  (a fixture)
