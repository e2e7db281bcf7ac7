import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from tests.support.live_api import live_api  # noqa: F401  (a fixture)
from tests.support.recording_api import Recorder


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
